"""Accepting a turn: the user's message and the turn, written under the session's multitask
policy (reject, enqueue or interrupt) and its one-active-turn rule."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from flask_smorest import abort
from sqlalchemy import (
    Boolean,
    Row,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from models import Agent, ChatSession, Message, Room, Turn, lifecycle, utcnow
from models.base import UTCDateTime
from models.messages import INSERT_MESSAGE
from models.turn_view import TURN_VIEW_COLUMNS
from models.turns import ACTIVE_STATUSES, PENDING, QUEUED, WEBHOOK_PENDING

from .auth import current_user_id
from .resources.sessions import abort_deleted
from .state import autocommit_connection, get_db
from .turn_view import INSERT_TURN, accepted_turn_view, turn_view
from .webhook_secret import require_secret_for

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Concurrent posts on one session race on the one-active-turn index; the loser re-decides.
MAX_ACCEPT_ATTEMPTS = 5


def _fingerprint(session_id: int, data: dict) -> str:
    request = {
        "session_id": session_id,
        "content": data["content"],
        "metadata": data["meta"],
        "multitask": data.get("multitask"),
    }
    if "webhook" in data:  # only then: the fingerprints of requests without one stay as they were
        request["webhook"] = data["webhook"]
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_scope_accepts_turns(session: Row):
    """``session``: a row of _LOCK_OWNED_SESSION."""
    if session.scope_deleted:
        if session.agent_id is not None:
            abort_deleted(Agent, session.agent_id)
        abort_deleted(Room, session.room_id)
    if session.room_id is not None and not session.has_agents:
        abort(
            409,
            message=f"Room {session.room_id} has no agents to answer; assign one first.",
            code="room_empty",
        )


def _replay(key: str, fingerprint: str) -> Turn | None:
    """The turn an earlier request with this Idempotency-Key created, if any."""
    db = get_db()
    original = db.scalar(
        select(Turn).where(Turn.user_id == current_user_id(), Turn.idempotency_key == key)
    )
    if original is None:
        return None
    if original.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        # Expired: free the key for this new request.
        original.idempotency_key = None
        db.flush()
        return None
    if original.request_fingerprint != fingerprint:
        abort(
            422,
            message="This Idempotency-Key was used for a different request.",
            code="idempotency_key_reused",
        )
    return original


# Written out: on SQLite, SQLAlchemy renders RETURNING columns unqualified, which would turn
# these correlated subqueries into comparisons of a table's columns with themselves.
_SCOPE_DELETED_AT = (
    "COALESCE((SELECT deleted_at FROM agents WHERE agents.id = sessions.agent_id),"
    " (SELECT deleted_at FROM rooms WHERE rooms.id = sessions.room_id))"
)
_SCOPE_DELETED = literal_column(f"{_SCOPE_DELETED_AT} IS NOT NULL", Boolean)
_ROOM_HAS_AGENTS = literal_column(
    "EXISTS (SELECT 1 FROM room_agents WHERE room_agents.room_id = sessions.room_id)", Boolean
)
_UNFINISHED_STATUSES = (PENDING, *ACTIVE_STATUSES)
# The session's first unfinished turn, the active one before any pending: what a rejection
# names. A statement of its own, run once the session is locked: in READ COMMITTED a statement
# reads as of its start, so folded into the locking UPDATE it would miss a turn that ended
# while that UPDATE waited for the lock (and a turn accepted as pending behind it would wait
# for nothing).
_turns = Turn.__table__
_FIRST_UNFINISHED = (
    select(_turns.c.id)
    .where(_turns.c.session_id == bindparam("sid"), _turns.c.status.in_(_UNFINISHED_STATUSES))
    .order_by(_turns.c.status == PENDING, _turns.c.id)
    .limit(1)
)
# The caller's live session, locked until the commit and marked updated, with what decides
# whether its agent or room takes turns: one statement. The lock serialises turn decisions on
# the session: a turn ending meanwhile then sees the one being accepted as pending. (Rolled back
# with the request when nothing is accepted.)
# Core, not the ORM's bulk UPDATE: loading the session as an entity cost more than the statement.
_sessions = ChatSession.__table__
_NOW = bindparam("now", type_=UTCDateTime())
_OWNED_LIVE_SESSION = (
    _sessions.c.id == bindparam("sid"),
    _sessions.c.user_id == bindparam("uid"),
    _sessions.c.deleted_at.is_(None),
)
_LOCK_OWNED_SESSION = (
    update(_sessions)
    .where(*_OWNED_LIVE_SESSION)
    .values(updated_at=_NOW)
    .returning(
        _sessions.c.id,
        _sessions.c.agent_id,
        _sessions.c.room_id,
        _sessions.c.multitask,
        _sessions.c.webhook_url,
        _SCOPE_DELETED.label("scope_deleted"),
        _ROOM_HAS_AGENTS.label("has_agents"),
    )
)


# The common case on PostgreSQL in one statement, outside any transaction: lock and mark the
# caller's session if it takes turns, insert the turn as queued and its message. Refused by the
# one-active-turn index when a turn is unfinished (a session has pending turns only behind an
# active one), or returning no row when the session is gone or takes no turns: then nothing was
# written, and _accept decides with the session's turns in view. Five round trips fewer.
_messages = Message.__table__
_sessions_taking_turns = (
    update(_sessions)
    .where(
        *_OWNED_LIVE_SESSION,
        literal_column(f"{_SCOPE_DELETED_AT} IS NULL", Boolean),
        (_sessions.c.room_id.is_(None) | _ROOM_HAS_AGENTS),
    )
    .values(updated_at=_NOW)
    .returning(_sessions.c.id, _sessions.c.webhook_url)
    .cte("locked")
)


def _insert_from(table, values: dict):
    """INSERT INTO table (keys) SELECT values: every column given (no client-side defaults)."""
    return insert(table).from_select(list(values), select(*values.values()), include_defaults=False)


_META = bindparam("meta", type_=_turns.c.metadata.type)
# The turn's own webhook, else its session's (a turn that asks for none takes the other path).
_WEBHOOK_URL = func.coalesce(
    bindparam("webhook", type_=_turns.c.webhook_url.type), _sessions_taking_turns.c.webhook_url
)
_queued_turn = (
    _insert_from(
        _turns,
        {
            "session_id": _sessions_taking_turns.c.id,
            "user_id": bindparam("uid"),
            "status": literal(QUEUED),
            "attempt": literal(0),
            "dispatched_at": _NOW,
            "progress": literal({}, _turns.c.progress.type),
            "metadata": _META,
            "created_at": _NOW,
            "updated_at": _NOW,
            "webhook_url": _WEBHOOK_URL,
            "webhook_status": case((_WEBHOOK_URL.is_not(None), literal(WEBHOOK_PENDING))),
        },
    )
    .returning(*TURN_VIEW_COLUMNS)
    .cte("turn")
)
_input_message = (
    _insert_from(
        _messages,
        {
            "session_id": _queued_turn.c.session_id,
            "turn_id": _queued_turn.c.id,
            "step": literal(0),
            "role": literal("user"),
            "visibility": literal("shared"),
            "content": bindparam("content", type_=_messages.c.content.type),
            "metadata": _META,
            "created_at": _NOW,
        },
    )
    .returning(_messages.c.id)
    .cte("message")
)
_ACCEPT_QUEUED = select(_queued_turn, _input_message.c.id.label("input_message_id")).select_from(
    _queued_turn.join(_input_message, true())
)


def _accept_queued(session_id: int, data: dict) -> Row | None:
    """The turn accepted as queued in one statement (PostgreSQL), or None if it was not."""
    params = {
        "sid": session_id,
        "uid": current_user_id(),
        "now": utcnow(),
        "meta": data["meta"],
        "content": data["content"],
        "webhook": data.get("webhook"),
    }
    with autocommit_connection() as conn:
        try:
            return conn.execute(_ACCEPT_QUEUED, params).one_or_none()
        except IntegrityError:
            return None


def _lock_owned_session(session_id: int, now) -> Row:
    """The caller's session, locked: its id, agent_id, room_id and multitask policy."""
    session = (
        get_db()
        .execute(_LOCK_OWNED_SESSION, {"sid": session_id, "uid": current_user_id(), "now": now})
        .one_or_none()
    )
    if session is None:
        abort(404, message=f"ChatSession {session_id} not found.")
    _check_scope_accepts_turns(session)
    return session


def accept(session_id: int, data: dict, key: str | None):
    """Write the user message and the turn under the session's multitask policy.

    Returns (turn, its view, replayed, ids to dispatch after the commit). The turn and the
    message are written as Core INSERTs: the ORM's unit of work cost more than the statements.
    ``key``: the request's Idempotency-Key, if any.
    """
    db = get_db()
    require_secret_for(data.get("webhook"))
    fingerprint = _fingerprint(session_id, data) if key is not None else None
    # Whether inserting the turn as queued may be tried before reading the session's turns.
    optimistic = True
    no_webhook = "webhook" in data and data["webhook"] is None  # not even the session's
    if key is None and not no_webhook and db.get_bind().dialect.name == "postgresql":
        turn = _accept_queued(session_id, data)
        if turn is not None:
            return turn, accepted_turn_view(turn, turn.input_message_id), False, [turn.id]
        optimistic = False  # it was tried, and refused
    for attempt in range(MAX_ACCEPT_ATTEMPTS):
        now = utcnow()
        session = _lock_owned_session(session_id, now)
        if key is not None and (original := _replay(key, fingerprint)) is not None:
            return original, turn_view(db, original), True, []
        # First try the common case without reading the session's turns: a session has pending
        # turns only behind an active one, so inserting the turn as queued succeeds exactly
        # when none is unfinished (the one-active-turn index refuses it otherwise, and the
        # session lock holds the turns still). Refused, the next attempt reads and decides.
        optimistic = optimistic and attempt == 0
        busy = None if optimistic else db.scalar(_FIRST_UNFINISHED, {"sid": session.id})
        policy = data.get("multitask") or session.multitask
        webhook = data.get("webhook", session.webhook_url)
        status = QUEUED
        if busy is not None:
            if policy == "reject":
                abort(
                    409,
                    message=f"Turn {busy} of this session is still active; wait for it, "
                    "cancel it, or post with multitask=enqueue or interrupt.",
                    code="turn_active",
                    active_turn_id=busy,
                )
            elif policy == "enqueue":
                status = PENDING
            else:  # interrupt: everything unfinished gives way to the new message
                unfinished = select(Turn).where(
                    Turn.session_id == session.id, Turn.status.in_(_UNFINISHED_STATUSES)
                )
                for turn in db.scalars(unfinished):
                    lifecycle.cancel(db, turn, stop_reason="interrupted", promote=False)
        try:
            turn = db.execute(
                INSERT_TURN,
                dict(
                    session_id=session.id,
                    user_id=current_user_id(),
                    status=status,
                    dispatched_at=now if status == QUEUED else None,
                    idempotency_key=key,
                    request_fingerprint=fingerprint,
                    metadata=data["meta"],
                    created_at=now,
                    updated_at=now,
                    webhook_url=webhook,
                    webhook_status=WEBHOOK_PENDING if webhook is not None else None,
                ),
            ).one()
            message_id = db.execute(
                INSERT_MESSAGE,
                dict(
                    session_id=session.id,
                    turn_id=turn.id,
                    step=0,
                    role="user",
                    content=data["content"],
                    metadata=data["meta"],
                    created_at=now,
                ),
            ).scalar_one()
            db.commit()
        except IntegrityError:
            # A turn is active (or another request won the race for the idempotency key):
            # decide again, knowing the session's turns.
            db.rollback()
            continue
        # The view as committed, without reading it back: the turn has only its input message.
        to_dispatch = [turn.id] if status == QUEUED else []
        return turn, accepted_turn_view(turn, message_id), False, to_dispatch
    abort(
        409, message="The session is too busy to accept this turn now; retry.", code="turn_conflict"
    )
