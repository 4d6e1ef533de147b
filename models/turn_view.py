"""The turn as clients see it: what GET /api/v1/turns/{id} answers and a webhook POSTs.

Both sides write this document (the API its answers, the worker the bodies of the turn's
webhook, and worker/ never imports api/), so the view, its schema and its JSON text live here,
in one place: a webhook body is the JSON text GET answers, built from the turn as it stands
during the delivery (rather than stored at the turn's end: its webhook's state is part of it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
from sqlalchemy import Connection, Row, bindparam, select

from .messages import Message
from .schema_fields import TIMESTAMP_EXAMPLE, DecimalString
from .turns import TURN_STATUSES, WEBHOOK_STATUSES, Turn

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def webhook_id(turn_id: int, created_at: datetime) -> str:
    """The ``webhook-id`` of the turn's end event: the same on every attempt, so receivers can
    deduplicate, and unique across databases (a restored or a new one reuses turn ids, not
    their creation time to the microsecond)."""
    return f"msg_turn{turn_id}_{(created_at - _EPOCH) // timedelta(microseconds=1)}"


def _webhook(turn: Turn | Row) -> dict[str, Any] | None:
    if turn.webhook_url is None:
        return None
    return {
        "id": webhook_id(turn.id, turn.created_at),
        "url": turn.webhook_url,
        "status": turn.webhook_status,
        "attempts": turn.webhook_attempts,
        "last_status": turn.webhook_last_status,
        "last_error": turn.webhook_last_error,
        "next_attempt_at": turn.webhook_next_attempt_at,
    }


def view(turn: Turn | Row, steps: list[tuple[int, int]]) -> dict[str, Any]:
    """``turn`` is a Turn, or a row with the columns of TURN_VIEW_COLUMNS; ``steps`` the
    (step, message id) of its messages."""
    return {
        "id": turn.id,
        "session_id": turn.session_id,
        "status": turn.status,
        "stop_reason": turn.stop_reason,
        "error": (
            {"code": turn.error_code, "message": turn.error_message} if turn.error_code else None
        ),
        "attempt": turn.attempt,
        "created_at": turn.created_at,
        "started_at": turn.started_at,
        "completed_at": turn.completed_at,
        "updated_at": turn.updated_at,
        "input_message_id": next((mid for step, mid in steps if step == 0), None),
        "message_ids": [mid for step, mid in steps if step > 0],
        "progress": turn.progress,
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
            "cost": turn.cost,
        },
        "meta": turn.meta,
        "webhook": _webhook(turn),
    }


# The turn columns view() reads, labelled with the Turn attribute it reads each by.
TURN_VIEW_COLUMNS = [
    Turn.__mapper__.columns[name].label(name)
    for name in (
        "id",
        "session_id",
        "status",
        "stop_reason",
        "error_code",
        "error_message",
        "attempt",
        "created_at",
        "started_at",
        "completed_at",
        "updated_at",
        "progress",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "meta",
        "webhook_url",
        "webhook_status",
        "webhook_attempts",
        "webhook_last_status",
        "webhook_last_error",
        "webhook_next_attempt_at",
    )
]
_TURNS, _MESSAGES = Turn.__table__, Message.__table__
TURN_WITH_MESSAGES = (
    select(*TURN_VIEW_COLUMNS, _MESSAGES.c.step, _MESSAGES.c.id.label("message_id"))
    .select_from(_TURNS.outerjoin(_MESSAGES, _MESSAGES.c.turn_id == _TURNS.c.id))
    .where(_TURNS.c.id == bindparam("turn_id"))
    .order_by(_MESSAGES.c.step)
)


def view_of_rows(rows: list[Row]) -> dict[str, Any] | None:
    """The view from rows of a turn's columns joined with its messages' step and message_id."""
    if not rows:
        return None
    return view(rows[0], [(row.step, row.message_id) for row in rows if row.message_id is not None])


def read_turn_view(conn: Connection, turn_id: int) -> dict[str, Any] | None:
    """The turn's view, whoever owns it (the API reads its owner's turns only)."""
    return view_of_rows(conn.execute(TURN_WITH_MESSAGES, {"turn_id": turn_id}).all())


class TurnErrorSchema(ma.Schema):
    code = ma.fields.String(metadata={"example": "llm_unavailable"})
    message = ma.fields.String()


class UsageTotalsSchema(ma.Schema):
    prompt_tokens = ma.fields.Integer()
    completion_tokens = ma.fields.Integer()
    total_tokens = ma.fields.Integer()
    cost = DecimalString(metadata={"description": "USD, exact decimal."})


class TurnWebhookSchema(ma.Schema):
    id = ma.fields.String(
        metadata={
            "description": "The webhook-id header of the delivery: the same on every attempt.",
            "example": "msg_turn42_1795608000000000",
        }
    )
    url = ma.fields.String(metadata={"example": "https://example.com/hooks/roomcast"})
    status = ma.fields.String(
        metadata={
            "enum": list(WEBHOOK_STATUSES),
            "description": "pending until the turn's end is delivered (a 2xx answer), or "
            "failed for good (a 4xx other than 429, a refused address, or retries exhausted).",
        }
    )
    attempts = ma.fields.Integer(metadata={"description": "Deliveries tried so far."})
    last_status = ma.fields.Integer(
        allow_none=True, metadata={"description": "HTTP status of the last attempt's answer."}
    )
    last_error = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "Why the last attempt got no answer: timeout, connection_error, "
            "dns_error, address_refused, protocol_error, secret_unreadable.",
            "example": "timeout",
        },
    )
    next_attempt_at = ma.fields.DateTime(
        allow_none=True,
        metadata={"description": "When the next attempt is due (null once delivered or failed)."},
    )


class TurnSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True, metadata={"example": 1})
    created_at = ma.fields.DateTime(dump_only=True, metadata=TIMESTAMP_EXAMPLE)
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
    webhook = ma.fields.Nested(
        TurnWebhookSchema,
        dump_only=True,
        allow_none=True,
        metadata={"description": "The delivery of the turn's end to its webhook (null: none)."},
    )


TURN_SCHEMA = TurnSchema()


def turn_json(view: dict[str, Any]) -> str:
    """The turn's JSON text, as the API answers it (Flask's defaults: sorted keys, ASCII)."""
    return json.dumps(TURN_SCHEMA.dump(view), sort_keys=True, separators=(",", ":"))
