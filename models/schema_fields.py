"""Marshmallow fields of the documents both sides write: the API's answers and the webhook
bodies the worker sends (the turn, models/turn_view.py)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

# What a DecimalString looks like on the wire (formatted with "f": never an exponent).
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
TIMESTAMP_EXAMPLE = {"example": "2026-11-25T12:00:00+00:00"}


class DecimalString(ma.fields.Decimal):
    """An exact decimal written as a JSON string (``"0.01234500"``), so no digit is lost to a
    binary float; documented as such (a plain Decimal field is documented as a number)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("as_string", True)
        kwargs["metadata"] = {
            "type": "string",
            "format": "decimal",
            "pattern": DECIMAL_PATTERN,
            **kwargs.get("metadata", {}),
        }
        super().__init__(**kwargs)
