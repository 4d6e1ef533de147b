from __future__ import annotations

import marshmallow as ma

from models.sessions import MULTITASK_POLICIES
from models.turns import TURN_STATUSES

from .base import DecimalString, Metadata, ReadSchema, StrictSchema
from .storable import Schema

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


class TurnErrorSchema(Schema):
    code = ma.fields.String(metadata={"example": "llm_unavailable"})
    message = ma.fields.String()


class UsageTotalsSchema(Schema):
    prompt_tokens = ma.fields.Integer()
    completion_tokens = ma.fields.Integer()
    total_tokens = ma.fields.Integer()
    cost = DecimalString(metadata={"description": "USD, exact decimal."})


class TurnSchema(ReadSchema):
    session_id = ma.fields.Integer(dump_only=True)
    status = ma.fields.String(
        dump_only=True,
        metadata={
            "enum": list(TURN_STATUSES),
            "description": "pending: waiting behind the session's active turn.",
        },
    )
    stop_reason = ma.fields.String(dump_only=True, allow_none=True)
    error = ma.fields.Nested(TurnErrorSchema, dump_only=True, allow_none=True)
    attempt = ma.fields.Integer(dump_only=True)
    started_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    completed_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    updated_at = ma.fields.DateTime(dump_only=True)
    input_message_id = ma.fields.Integer(dump_only=True)
    message_ids = ma.fields.List(
        ma.fields.Integer(),
        dump_only=True,
        metadata={"description": "Messages this turn produced so far."},
    )
    progress = ma.fields.Dict(
        dump_only=True, metadata={"description": "Per-agent progress of a room turn."}
    )
    usage = ma.fields.Nested(UsageTotalsSchema, dump_only=True)
    metadata = ma.fields.Dict(dump_only=True, attribute="meta")
