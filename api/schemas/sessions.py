from __future__ import annotations

import marshmallow as ma

from models.sessions import MULTITASK_POLICIES

from .base import Metadata, ReadSchema, StrictSchema
from .webhooks import URL_EXAMPLE, webhook_field

MULTITASK_DOC = (
    "What a new turn gets while another is active: reject (409 naming the active turn), "
    "enqueue (runs after it, in order) or interrupt (cancels unfinished turns, runs now)."
)
WEBHOOK_DOC = (
    'Where the end of each of the session\'s turns is POSTed, signed (README "Webhooks"), '
    "unless the turn names its own; null: none. Needs a webhook secret."
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
    webhook = webhook_field(WEBHOOK_DOC, attribute="webhook_url")


class SessionUpdateSchema(StrictSchema):
    title = ma.fields.String(validate=ma.validate.Length(max=200))
    multitask = ma.fields.String(
        validate=ma.validate.OneOf(MULTITASK_POLICIES), metadata={"description": MULTITASK_DOC}
    )
    meta = Metadata()
    webhook = webhook_field(WEBHOOK_DOC, attribute="webhook_url")


class SessionSchema(ReadSchema):
    scope = ma.fields.String(dump_only=True, metadata={"description": "room or agent"})
    room_id = ma.fields.Integer(dump_only=True, allow_none=True)
    agent_id = ma.fields.Integer(dump_only=True, allow_none=True)
    title = ma.fields.String(dump_only=True)
    multitask = ma.fields.String(dump_only=True)
    metadata = ma.fields.Dict(dump_only=True, attribute="meta")
    updated_at = ma.fields.DateTime(dump_only=True)
    webhook = ma.fields.String(
        dump_only=True,
        allow_none=True,
        attribute="webhook_url",
        metadata={"description": "The turns' default webhook.", "example": URL_EXAMPLE},
    )
