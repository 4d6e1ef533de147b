from __future__ import annotations

import marshmallow as ma

from ..pagination import CursorArgsSchema
from .base import ReadSchema, id_field


class MessageArgsSchema(CursorArgsSchema):
    turn_id = id_field(strict=False, metadata={"description": "Only the messages of this turn."})


class MessageSchema(ReadSchema):
    session_id = ma.fields.Integer(dump_only=True)
    turn_id = ma.fields.Integer(dump_only=True)
    step = ma.fields.Integer(dump_only=True)
    role = ma.fields.String(dump_only=True, metadata={"example": "assistant"})
    agent_id = ma.fields.Integer(
        dump_only=True,
        allow_none=True,
        metadata={"description": "The author agent (null for the user)."},
    )
    visibility = ma.fields.String(dump_only=True, metadata={"description": "shared or private"})
    content = ma.fields.String(dump_only=True)
    tool_calls = ma.fields.List(ma.fields.Dict(), dump_only=True, allow_none=True)
    tool_call_id = ma.fields.String(dump_only=True, allow_none=True)
    metadata = ma.fields.Dict(dump_only=True, attribute="meta")
