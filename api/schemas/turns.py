from __future__ import annotations

import marshmallow as ma

from models.sessions import MULTITASK_POLICIES

from .base import Metadata, StrictSchema
from .storable import Schema
from .webhooks import webhook_field

MAX_CONTENT_CHARS = 32_000
MAX_WAIT_SECONDS = 30
WAIT_UNTIL = ("change", "terminal")


class TurnCreateSchema(StrictSchema):
    content = ma.fields.String(
        required=True,
        validate=[
            ma.validate.Length(min=1, max=MAX_CONTENT_CHARS),
            ma.validate.Regexp(r"\S", error="Must not be blank."),
        ],
        metadata={"example": "Summarise yesterday's meeting notes."},
    )
    meta = Metadata(load_default=dict)
    multitask = ma.fields.String(
        validate=ma.validate.OneOf(MULTITASK_POLICIES),
        metadata={"description": "Overrides the session's multitask policy for this turn."},
    )
    webhook = webhook_field(
        'Where the turn\'s end is POSTed, signed (README "Webhooks"); overrides the '
        "session's webhook, and null means none for this turn."
    )


class IdempotencyHeaderSchema(Schema):
    class Meta:
        unknown = ma.EXCLUDE

    idempotency_key = ma.fields.String(
        data_key="Idempotency-Key",
        validate=ma.validate.Length(min=1, max=255),
        metadata={"description": "Retry-safe key: the same key within 24 h returns the same turn."},
    )


class TurnWaitArgsSchema(Schema):
    wait = ma.fields.Float(
        load_default=0,
        validate=ma.validate.Range(min=0, max=MAX_WAIT_SECONDS),
        metadata={
            "description": "Long-poll: hold the answer up to this many seconds until the "
            "turn changes (with If-None-Match: until it differs from that ETag)."
        },
    )
    until = ma.fields.String(
        load_default="change",
        validate=ma.validate.OneOf(WAIT_UNTIL),
        metadata={
            "description": "With wait: `change` answers at the first change; `terminal` only "
            "once the turn is completed, failed or cancelled (one request per turn)."
        },
    )
