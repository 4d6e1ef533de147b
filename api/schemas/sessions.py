from __future__ import annotations

import marshmallow as ma

from models.sessions import MULTITASK_POLICIES

from .base import Metadata, ReadSchema, StrictSchema

MULTITASK_DOC = (
    "What a new turn gets while another is active: reject (409 naming the active turn), "
    "enqueue (runs after it, in order) or interrupt (cancels unfinished turns, runs now)."
)


class SessionCreateSchema(StrictSchema):
    title = ma.fields.String(
        load_default="",
        validate=ma.validate.Length(max=200),
        metadata={"example": "Release planning"},
    )
    multitask = ma.fields.String(
        load_default="reject",
        validate=ma.validate.OneOf(MULTITASK_POLICIES),
        metadata={"description": MULTITASK_DOC},
    )
    meta = Metadata(load_default=dict)


class SessionUpdateSchema(StrictSchema):
    title = ma.fields.String(validate=ma.validate.Length(max=200))
    multitask = ma.fields.String(
        validate=ma.validate.OneOf(MULTITASK_POLICIES), metadata={"description": MULTITASK_DOC}
    )
    meta = Metadata()


class SessionSchema(ReadSchema):
    scope = ma.fields.String(dump_only=True, metadata={"description": "room or agent"})
    room_id = ma.fields.Integer(dump_only=True, allow_none=True)
    agent_id = ma.fields.Integer(dump_only=True, allow_none=True)
    title = ma.fields.String(dump_only=True)
    multitask = ma.fields.String(dump_only=True)
    metadata = ma.fields.Dict(dump_only=True, attribute="meta")
    updated_at = ma.fields.DateTime(dump_only=True)
