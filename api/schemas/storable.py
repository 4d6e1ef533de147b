"""The base of every schema: input text must be text both databases can store.

PostgreSQL refuses a NUL character in text (and ``\\u0000`` in JSONB), and a lone surrogate
(``"\\ud800"`` is valid JSON) cannot be encoded to UTF-8 by either database driver; left to the
database, both end as a 500. Every schema checks its input once, before its fields are loaded,
so a field added later is covered without doing anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow as ma

NUL_MESSAGE = "Must not contain a NUL character (\\u0000)."
SURROGATE_MESSAGE = "Must be valid Unicode text (no lone surrogate such as \\ud800)."


def unstorable_reason(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if "\x00" in text:
        return NUL_MESSAGE
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def first_unstorable(value: Any) -> str | None:
    """The reason of the first unstorable string in ``value``, searched through JSON values
    (object keys included), or None."""
    if isinstance(value, str):
        return unstorable_reason(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            reason = first_unstorable(key) or first_unstorable(item)
            if reason:
                return reason
    elif isinstance(value, list | tuple):
        for item in value:
            reason = first_unstorable(item)
            if reason:
                return reason
    return None


class Schema(ma.Schema):
    """Every schema's base: a string the databases cannot store is a 422 naming its field."""

    @ma.pre_load
    def refuse_unstorable_text(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # not an object: the load itself rejects it
        errors: dict[str, list[str]] = {}
        # Only the keys this schema loads (as its fields see them, e.g. one value of a repeated
        # query argument): an unknown key is rejected by the load, and a header the schema does
        # not read is none of its business.
        for name, field in self.load_fields.items():
            key = field.data_key or name
            if key in data:
                reason = first_unstorable(data[key])
                if reason:
                    errors[key] = [reason]
        if errors:
            raise ma.ValidationError(errors)
        return data
