"""Base schemas: unknown fields are rejected, ids and timestamps are read-only."""

from __future__ import annotations

import marshmallow as ma


class StrictSchema(ma.Schema):
    """Input schema: an unknown field is an error, never silently dropped."""

    class Meta:
        unknown = ma.RAISE


class ReadSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)
