"""Reusable fields for the API's schemas."""

from __future__ import annotations

import json

import marshmallow as ma

MAX_METADATA_BYTES = 4096
# Ids are 64-bit signed integers in the database; a larger number is not an id of ours.
MAX_ID = 2**63 - 1


class Id(ma.fields.Integer):
    """A row id: a positive 64-bit integer (PostgreSQL rejects larger ones with an error)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strict", True)
        super().__init__(validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


class Metadata(ma.fields.Dict):
    """A small JSON object of the client's own: string keys, bounded serialized size."""

    default_error_messages = {
        "too_large": f"Must be at most {MAX_METADATA_BYTES} bytes when serialized as JSON.",
    }

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("keys", ma.fields.String())
        kwargs.setdefault(
            "metadata",
            {"description": "Client data (JSON object, <= 4 KiB).", "example": {"source": "docs"}},
        )
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if len(json.dumps(result, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
            raise self.make_error("too_large")
        return result
