"""The server's provider catalog, as clients may read it (never URLs, key names or prices)."""

from __future__ import annotations

import marshmallow as ma

from models.providers import LOCAL_MODEL, LOCAL_PROVIDER, PROVIDER_TYPES, TOOL_CALLING

from .storable import Schema


class ProviderSchema(Schema):
    name = ma.fields.String(dump_only=True, metadata={"example": LOCAL_PROVIDER})
    type = ma.fields.String(dump_only=True, metadata={"enum": list(PROVIDER_TYPES)})
    default_model = ma.fields.String(dump_only=True, metadata={"example": LOCAL_MODEL})
    models = ma.fields.List(
        ma.fields.String(),
        dump_only=True,
        metadata={"description": "The models it offers; empty: any model name is accepted."},
    )
    tool_calling = ma.fields.String(dump_only=True, metadata={"enum": list(TOOL_CALLING)})
    default = ma.fields.Boolean(
        dump_only=True, metadata={"description": "The provider of an agent that names none."}
    )


class ProviderListSchema(Schema):
    data = ma.fields.List(ma.fields.Nested(ProviderSchema), dump_only=True)
