"""The turn as clients see it (models/turn_view.py), read for its owner."""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select
from sqlalchemy.orm import Session

from models import ChatSession, Message, Turn
from models import turn_view as document
from models.turns import TERMINAL_STATUSES

_TURNS, _SESSIONS = Turn.__table__, ChatSession.__table__
# Built once and run as Core: a poll costs one query, with neither building a statement nor
# loading ORM objects (measured per query: building it 0.53 vs 0.40 ms, loading a Turn entity
# 0.47 vs 0.30 ms).
_OF_USER = (_TURNS.c.user_id == bindparam("user_id"), _SESSIONS.c.deleted_at.is_(None))
OWNED_TURN_WITH_MESSAGES = document.TURN_WITH_MESSAGES.join(
    _SESSIONS, _SESSIONS.c.id == _TURNS.c.session_id
).where(*_OF_USER)
_OWNED_TURN_ID = (
    select(_TURNS.c.id)
    .join(_SESSIONS, _SESSIONS.c.id == _TURNS.c.session_id)
    .where(_TURNS.c.id == bindparam("turn_id"), *_OF_USER)
)


def owns_turn(conn: Connection, turn_id: int, user_id: int) -> bool:
    """Whether the user has this turn (in a session not deleted): one indexed statement."""
    return conn.scalar(_OWNED_TURN_ID, {"turn_id": turn_id, "user_id": user_id}) is not None


def owned_turn_view(conn: Connection, turn_id: int, user_id: int) -> dict[str, Any] | None:
    """The view of the user's turn (in a session not deleted), read in one query; or None."""
    rows = conn.execute(OWNED_TURN_WITH_MESSAGES, {"turn_id": turn_id, "user_id": user_id}).all()
    return document.view_of_rows(rows)


class _EndedView(dict):
    """An ended turn's view read once for the waiters its end woke: its JSON is made once."""

    json: tuple[str, str] | None = None


class _SharedRead:
    __slots__ = ("done", "view")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.view: _EndedView | None = None


_SHARED_READS: dict[tuple[int, int], _SharedRead] = {}
_SHARED_READS_LOCK = threading.Lock()


def shared_ended_turn_view(
    turn_id: int, user_id: int, read: Callable[[], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """``read()`` (the user's view of the turn) for the many clients that a turn's end wakes at
    once: those that arrive while one of them reads share its read, when it found the turn
    ended (an ended turn's view changes no more, but for its webhook's delivery state, which
    this read is as fresh about as any); otherwise each reads for itself.

    Ten clients long-polling one turn cost one query and one serialisation, not ten.
    """
    key = (turn_id, user_id)
    with _SHARED_READS_LOCK:
        shared = _SHARED_READS.get(key)
        leader = shared is None
        if leader:
            shared = _SHARED_READS[key] = _SharedRead()
    if not leader:
        shared.done.wait()
        return shared.view or read()
    try:
        view = read()
        if view is not None and view["status"] in TERMINAL_STATUSES:
            shared.view = view = _EndedView(view)
        return view
    finally:
        with _SHARED_READS_LOCK:
            del _SHARED_READS[key]
        shared.done.set()


def turn_json(view: dict[str, Any]) -> tuple[str, str]:
    """A turn's JSON body (as jsonify writes it) and its ETag, the hash of that body.

    One dump and one serialisation serve both the response and its validator.
    """
    if made := getattr(view, "json", None):
        return made
    body = document.turn_json(view) + "\n"
    made = body, hashlib.sha1(body.encode()).hexdigest()
    if isinstance(view, _EndedView):
        view.json = made
    return made


# A new turn's row as its view reads it, in the INSERT's own RETURNING (no read back).
INSERT_TURN = insert(_TURNS).returning(*document.TURN_VIEW_COLUMNS)


def accepted_turn_view(turn: Row, input_message_id: int) -> dict[str, Any]:
    """The view of a turn just accepted (a row of INSERT_TURN): it has its input message and
    nothing else yet."""
    return document.view(turn, [(0, input_message_id)])


def turn_view(db: Session, turn: Turn) -> dict[str, Any]:
    steps = db.execute(
        select(Message.step, Message.id).where(Message.turn_id == turn.id).order_by(Message.step)
    ).all()
    return document.view(turn, [tuple(row) for row in steps])


def turn_views(db: Session, turns: list[Turn]) -> list[dict[str, Any]]:
    """Views of a page of turns with one query for all their messages."""
    by_turn: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if turns:
        rows = db.execute(
            select(Message.turn_id, Message.step, Message.id)
            .where(Message.turn_id.in_([t.id for t in turns]))
            .order_by(Message.turn_id, Message.step)
        )
        for turn_id, step, message_id in rows:
            by_turn[turn_id].append((step, message_id))
    return [document.view(turn, by_turn[turn.id]) for turn in turns]
