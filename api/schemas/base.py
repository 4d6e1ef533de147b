"""Base schemas and fields: unknown fields are rejected, ids and timestamps are read-only."""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma

from models.base import MAX_ID
from models.schema_fields import TIMESTAMP_EXAMPLE

from ..pagination import CursorArgsSchema
from .storable import Schema

# Metadata is for small client-side labels, not for documents.
MAX_METADATA_BYTES = 4096

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 2000
MAX_PROMPT_LENGTH = 32 * 1024


class StrictSchema(Schema):
    """Input schema: an unknown field is an error, never silently dropped.

    Read-only (``dump_only``) fields count as unknown on input, so a request that tries to set
    ``id`` or a timestamp is rejected rather than half applied.
    """

    class Meta:
        unknown = ma.RAISE


class ReadSchema(Schema):
    id = ma.fields.Integer(dump_only=True, metadata={"example": 1})
    created_at = ma.fields.DateTime(dump_only=True, metadata=TIMESTAMP_EXAMPLE)


class TimestampedReadSchema(ReadSchema):
    updated_at = ma.fields.DateTime(dump_only=True, metadata=TIMESTAMP_EXAMPLE)


class TrimmedString(ma.fields.String):
    """A string stripped of surrounding whitespace before it is validated."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


class JsonFloat(ma.fields.Float):
    """A JSON number: unlike ``Float``, the string ``"1.5"`` is a wrong type, not a number."""

    def _validated(self, value):
        if isinstance(value, str):
            raise self.make_error("invalid")
        return super()._validated(value)


def id_field(**kwargs: Any) -> ma.fields.Integer:
    """A reference to a row by id: a JSON integer within the id range."""
    kwargs.setdefault("strict", True)  # query strings pass strict=False
    return ma.fields.Integer(validate=ma.validate.Range(min=1, max=MAX_ID), **kwargs)


class Metadata(ma.fields.Dict):
    """A small JSON object of the client's own (at most 4 KiB serialized); ``metadata`` on the
    wire, ``meta`` on the model (``metadata`` is reserved by SQLAlchemy)."""

    default_error_messages = {
        "too_large": f"Must be at most {MAX_METADATA_BYTES} bytes when serialized as JSON."
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("data_key", "metadata")
        kwargs.setdefault(
            "metadata",
            {
                "description": f"Free-form JSON object, at most {MAX_METADATA_BYTES} bytes.",
                "example": {"team": "docs"},
            },
        )
        super().__init__(keys=ma.fields.String(), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> dict[str, Any]:
        result = super()._deserialize(value, attr, data, **kwargs)
        size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise self.make_error("too_large")
        return result


def name_field(**kwargs: Any) -> TrimmedString:
    """A display name: 1 to 100 characters once surrounding whitespace is stripped."""
    return TrimmedString(validate=ma.validate.Length(min=1, max=MAX_NAME_LENGTH), **kwargs)


def description_field(**kwargs: Any) -> ma.fields.String:
    return ma.fields.String(validate=ma.validate.Length(max=MAX_DESCRIPTION_LENGTH), **kwargs)


def prompt_field(**kwargs: Any) -> ma.fields.String:
    """Prompt text for a model (a system prompt, a room's instructions): at most 32 KiB."""
    return ma.fields.String(validate=ma.validate.Length(max=MAX_PROMPT_LENGTH), **kwargs)


def unique_items(values: list) -> None:
    if len(set(values)) != len(values):
        raise ma.ValidationError("Items must be unique.")


class NameSearchArgsSchema(CursorArgsSchema):
    """List arguments: a page, and optionally only the rows whose name contains ``q``."""

    q = ma.fields.String(
        validate=ma.validate.Length(min=1, max=100),
        metadata={"description": "Case-insensitive substring of the name.", "example": "writ"},
    )
