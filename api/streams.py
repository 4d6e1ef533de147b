"""Server-sent event streams of a turn and of a session, derived from what is committed.

A stream adds no write to the turn path: the worker already announces every step's commit
(models/turn_events.py), and on each wake-up the stream reads what is new since its cursor, in
one statement: the turn's row (status, attempt, progress), its messages and its usage records
with ids above the cursor's. Within one turn the steps commit one after the other (one attempt
holds the lease, a take-over is fenced), so message and usage ids grow in commit order.

The cursor is the state of what a client has been sent; every committed event carries it,
encoded, as its ``id`` (see :class:`Cursor`), so that a client reconnecting with
``Last-Event-ID`` gets exactly what it has not seen: nothing lost, nothing repeated. Token
deltas and ``superseded`` marks are not committed and carry no ``id``.

Streams hold no thread and no database connection while they wait: each read takes a pooled
connection for its statements, and the wait is on a threading event (cooperative under gevent).
When the client goes away, the next write (a heartbeat at the latest) fails, the generator is
closed, and its ``finally`` blocks give the watch back.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Row, bindparam, case, cast, null, select, union_all

from models import ChatSession, Message, Turn, UsageRecord
from models.messages import WRITTEN_COLUMNS
from models.settings import Settings
from models.turn_events import TurnEvents, TurnWatch, safety_reread_delay
from models.turn_view import TURN_SCHEMA, view_of_rows
from models.turns import PENDING, QUEUED, RUNNING, TERMINAL_STATUSES

from .turn_view import OWNED_TURN_WITH_MESSAGES

EVENT_NAMES = (
    "status",
    "plan",
    "message",
    "tool_call",
    "tool_result",
    "usage",
    "progress",
    "end",
    "delta",
    "superseded",
)
# Sent first: how long a client waits before reconnecting after the stream closes.
RETRY_MS = 2000
HEARTBEAT = ": keep-alive\n\n"

# Where a turn is in its lifecycle, as one growing number (a take-over queues a running turn
# again, with its attempt counted, so the number still grows): pending 1, queued 2 + 2a,
# running 1 + 2a (attempt a >= 1), terminal, and its end event sent.
NOTHING, PHASE_PENDING, TERMINAL, ENDED = 0, 1, 1000, 1001


def phase(status: str, attempt: int) -> int:
    if status == PENDING:
        return PHASE_PENDING
    if status == QUEUED:
        return 2 + 2 * attempt
    if status == RUNNING:
        return 1 + 2 * max(attempt, 1)
    return TERMINAL


_CURSOR = re.compile(
    r"^(\d{1,19})\.(\d{1,4})\.(\d{1,19})\.(\d{1,19})\.([0-9a-f]{1,8})\.([0-9a-f]{1,8})$"
)


@dataclass(frozen=True)
class Cursor:
    """What a client has been sent of a turn: ``turn.phase.message.usage.plan.progress``.

    ``phase`` as above, the last message and usage record ids sent, and short hashes of the
    plan and the progress last sent ("0": none). A session's stream sends its turns one after
    the other, so the cursor of the turn it is at is the session's cursor too.
    """

    turn_id: int
    phase: int = NOTHING
    message_id: int = 0
    usage_id: int = 0
    plan: str = "0"
    progress: str = "0"

    def encode(self) -> str:
        return (
            f"{self.turn_id}.{self.phase}.{self.message_id}.{self.usage_id}"
            f".{self.plan}.{self.progress}"
        )

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError for anything that is not a cursor this API wrote."""
        match = _CURSOR.match(text.strip())
        if match is None:
            raise ValueError(text)
        turn_id, phase_, message_id, usage_id, plan, progress = match.groups()
        return cls(int(turn_id), int(phase_), int(message_id), int(usage_id), plan, progress)


def lifecycle_until(status: str, attempt: int) -> list[tuple[str, int]]:
    """The statuses a turn now in (``status``, ``attempt``) went through last, the terminal
    one aside: a stream that did not see them (it read the turn later, or it resumes) sends
    them in order, so that every stream of a turn tells the same story."""
    if status == PENDING:
        return [(PENDING, 0)]
    if status == QUEUED or attempt < 1:
        return [(QUEUED, attempt)] if status == QUEUED else []
    # Claimed by this attempt, out of the queue (queued again after a take-over).
    return [(QUEUED, attempt - 1), (RUNNING, attempt)]


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    id: str | None = None

    def render(self) -> str:
        data = json.dumps(self.data, separators=(",", ":"), default=str)
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.name}\ndata: {data}\n\n"


def _digest(value: Any) -> str:
    if not value:
        return "0"
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


_TURNS, _SESSIONS = Turn.__table__, ChatSession.__table__
_MESSAGES, _USAGE = Message.__table__, UsageRecord.__table__
_MESSAGE_FIELDS = ("id", *WRITTEN_COLUMNS)
_USAGE_FIELDS = (
    "id",
    "turn_id",
    "step",
    "attempt",
    "agent_id",
    "provider",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
    "cost",
    "created_at",
)


def _nulls(columns, prefix: str) -> list:
    # Typed, so that both branches of the union agree and results convert as the columns do.
    return [cast(null(), c.type).label(prefix + c.key) for c in columns]


_TURN_COLUMNS = OWNED_TURN_WITH_MESSAGES.selected_columns
_MESSAGE_COLUMNS = [_MESSAGES.c[name] for name in _MESSAGE_FIELDS]
_USAGE_COLUMNS = [_USAGE.c[name] for name in _USAGE_FIELDS]
_NEW_MESSAGE = _MESSAGES.c.id > bindparam("message_after")
# A stream's read in one statement, so in one snapshot: the user's turn joined with its
# messages, as GET /turns/{id} reads it, with the columns of those after the cursor; then the
# turn's usage records after the cursor. What the turn's row shows, its messages and usage
# records show too (a step commits them together), and a terminal turn has all of them.
_TURN_SINCE = union_all(
    OWNED_TURN_WITH_MESSAGES.order_by(None).add_columns(
        *(case((_NEW_MESSAGE, c)).label("m_" + c.key) for c in _MESSAGE_COLUMNS),
        *_nulls(_USAGE_COLUMNS, "u_"),
    ),
    select(
        *_nulls(_TURN_COLUMNS, ""),
        *_nulls(_MESSAGE_COLUMNS, "m_"),
        *(c.label("u_" + c.key) for c in _USAGE_COLUMNS),
    ).where(_USAGE.c.turn_id == bindparam("turn_id"), _USAGE.c.id > bindparam("usage_after")),
)
_SESSION_TURNS = (
    select(_TURNS.c.id)
    .where(_TURNS.c.session_id == bindparam("session_id"), _TURNS.c.id >= bindparam("from_id"))
    .order_by(_TURNS.c.id)
    .limit(20)
)
_FIRST_UNFINISHED = (
    select(_TURNS.c.id)
    .where(
        _TURNS.c.session_id == bindparam("session_id"),
        _TURNS.c.status.in_((PENDING, QUEUED, RUNNING)),
    )
    .order_by(_TURNS.c.id)
    .limit(1)
)
_LAST_TURN = (
    select(_TURNS.c.id)
    .where(_TURNS.c.session_id == bindparam("session_id"))
    .order_by(_TURNS.c.id.desc())
    .limit(1)
)


def message_event_name(message: dict[str, Any]) -> str:
    if message["role"] == "tool":
        return "tool_result"
    if message["role"] == "assistant" and message.get("tool_calls"):
        return "tool_call"
    return "message"


@dataclass
class TurnState:
    """One read of a turn: its view (as GET /turns/{id}), and its new messages and usage."""

    view: dict[str, Any]
    messages: list[dict[str, Any]]
    usage: list[dict[str, Any]]


def _event_row(row: Row, prefix: str, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {name: row._mapping[prefix + name] for name in fields}
    if "cost" in out:
        out["cost"] = format(out["cost"], "f")
    out["created_at"] = out["created_at"].isoformat()
    return out


def read_turn(conn: Connection, turn_id: int, user_id: int, cursor: Cursor) -> TurnState | None:
    """The user's turn and what it committed after the cursor, in one statement (_TURN_SINCE);
    None if the user has no such turn (in a session not deleted)."""
    params = {
        "turn_id": turn_id,
        "user_id": user_id,
        "message_after": cursor.message_id,
        "usage_after": cursor.usage_id,
    }
    turn_rows, usage = [], []
    for row in conn.execute(_TURN_SINCE, params):
        if row.id is not None:
            turn_rows.append(row)
        else:
            usage.append(_event_row(row, "u_", _USAGE_FIELDS))
    if not turn_rows:
        return None
    # In GET's order; a turn without messages is one row (its step None): nothing to compare.
    turn_rows.sort(key=lambda row: (row.step, row.message_id))
    messages = [
        _event_row(row, "m_", _MESSAGE_FIELDS)
        for row in sorted(turn_rows, key=lambda row: row.message_id or 0)
        if row.m_id is not None
    ]
    usage.sort(key=lambda row: row["id"])
    return TurnState(view_of_rows(turn_rows), messages, usage)


def turn_events_since(state: TurnState, cursor: Cursor) -> tuple[list[Event], Cursor]:
    """The committed events of the turn the client has not been sent, in order, each with the
    cursor after it; and the cursor after the last."""
    view, turn_id = state.view, state.view["id"]
    events: list[Event] = []

    def emit(name: str, data: dict[str, Any], **moved: Any) -> None:
        nonlocal cursor
        cursor = replace(cursor, **moved)
        events.append(Event(name, {"turn_id": turn_id, **data}, cursor.encode()))

    status, attempt = view["status"], view["attempt"]
    for passed, of_attempt in lifecycle_until(status, attempt):
        reached = phase(passed, of_attempt)
        if cursor.phase < reached:
            emit("status", {"status": passed, "attempt": of_attempt}, phase=reached)

    progress = view["progress"] or {}
    plan = [
        {"index": index, **{k: entry.get(k) for k in ("agent_id", "name", "round") if k in entry}}
        for index, entry in enumerate(progress.get("speakers") or ())
    ]
    # A step's message and usage record commit together; sent in step order, message first,
    # and the plan (a new one, or one that grew) after the user's message, as it is written:
    # so a stream that reads the turn as it goes and one that reads it at the end agree.
    committed = [(m["step"], 0, m["id"], m) for m in state.messages] + [
        (u["step"], 1, u["id"], u) for u in state.usage
    ]
    if plan and _digest(plan) != cursor.plan:
        committed.append((0, 2, 0, {"mode": progress.get("mode"), "speakers": plan}))
    for _, kind, row_id, row in sorted(committed, key=lambda item: item[:3]):
        if kind == 0:
            emit(message_event_name(row), row, message_id=max(cursor.message_id, row_id))
        elif kind == 1:
            emit("usage", row, usage_id=max(cursor.usage_id, row_id))
        else:
            emit("plan", row, plan=_digest(plan))

    if _digest(progress) != cursor.progress:
        emit("progress", {"progress": progress}, progress=_digest(progress))

    if status in TERMINAL_STATUSES:
        if cursor.phase < TERMINAL:
            data = {"status": status, "attempt": attempt, "stop_reason": view["stop_reason"]}
            emit("status", {**data, "error": view["error"]}, phase=TERMINAL)
        if cursor.phase < ENDED:
            turn = TURN_SCHEMA.dump(view)
            emit("end", turn, phase=ENDED)
    return events, cursor


@dataclass
class StreamContext:
    """What a stream needs from the app, taken while the request is there."""

    settings: Settings
    events: TurnEvents
    connect: Callable[[], Any]  # a pooled autocommit connection
    user_id: int


def _delta_event(delta: dict[str, Any]) -> Event:
    return Event(delta["type"], {k: v for k, v in delta.items() if k != "type"})


class _Stream:
    """The loop both streams share: read, send, wait for a wake-up, a heartbeat or the end."""

    def __init__(self, ctx: StreamContext, tokens: bool) -> None:
        self.ctx = ctx
        self.tokens = tokens
        # The last committed step seen per turn: deltas of a step already committed are late.
        self.committed_step: dict[int, int] = {}

    def read(self, watch: TurnWatch) -> tuple[list[Event], bool]:
        """Events new since the cursor; and whether the stream is over."""
        raise NotImplementedError

    def seen(self, events: list[Event]) -> None:
        for event in events:
            if "step" in event.data and event.name != "usage":
                turn_id = event.data["turn_id"]
                step = event.data["step"]
                self.committed_step[turn_id] = max(self.committed_step.get(turn_id, -1), step)

    def fresh(self, delta: dict[str, Any]) -> bool:
        if delta.get("type") != "delta":
            return True
        return delta["step"] > self.committed_step.get(delta["turn_id"], -1)

    def run(self, watch: TurnWatch, refresh_tokens: Callable[[], None]) -> Iterator[str]:
        settings = self.ctx.settings
        yield f"retry: {RETRY_MS}\n\n"
        started = time.monotonic()
        deadline = started + settings.sse_max_seconds
        next_beat = started + settings.sse_heartbeat_seconds
        must_read = True
        next_check = 0.0
        while True:
            if must_read:
                events, over = self.read(watch)
                self.seen(events)
                if events:
                    yield "".join(event.render() for event in events)
                if over:
                    return
                must_read = False
                next_check = time.monotonic() + safety_reread_delay()
            now = time.monotonic()
            if now >= deadline:
                return  # the client reconnects with Last-Event-ID
            # At most every 10-15 s (the safety re-read bounds the wait); it writes only every
            # third of the flag's life.
            refresh_tokens()
            if now >= next_beat:
                yield HEARTBEAT
                next_beat = now + settings.sse_heartbeat_seconds
            announced = watch.changes(max(0.0, min(next_beat, next_check, deadline) - now))
            deltas = [d for d in watch.take_deltas() if self.fresh(d)]
            if deltas:
                yield "".join(_delta_event(delta).render() for delta in deltas)
            must_read = bool(announced) or time.monotonic() >= next_check


class TurnStream(_Stream):
    def __init__(self, ctx: StreamContext, turn_id: int, cursor: Cursor, tokens: bool) -> None:
        super().__init__(ctx, tokens)
        self.turn_id = turn_id
        self.cursor = cursor

    def read(self, watch: TurnWatch) -> tuple[list[Event], bool]:
        with self.ctx.connect() as conn:
            state = read_turn(conn, self.turn_id, self.ctx.user_id, self.cursor)
        if state is None:
            return [], True  # deleted meanwhile
        events, self.cursor = turn_events_since(state, self.cursor)
        return events, self.cursor.phase >= ENDED

    def __iter__(self) -> Iterator[str]:
        ctx = self.ctx
        asking = ctx.events.asking_tokens(self.turn_id) if self.tokens else nullcontext(_nothing)
        with ctx.events.watch(self.turn_id, deltas=self.tokens) as watch, asking as refresh:
            yield from self.run(watch, refresh)


def session_start(conn: Connection, session_id: int) -> Cursor:
    """Where a session's stream without Last-Event-ID starts: at the oldest unfinished turn, or
    after the last one (earlier turns are in the history). Read when the client connects: the
    server may first iterate the stream later, after a turn posted meanwhile has ended."""
    params = {"session_id": session_id}
    first = conn.scalar(_FIRST_UNFINISHED, params)
    if first is not None:
        return Cursor(first)
    last = conn.scalar(_LAST_TURN, params)
    return Cursor(last, phase=ENDED) if last is not None else Cursor(0)


class SessionStream(_Stream):
    """The session's turns one after the other, in id order: one is active at a time, and
    pending ones run after it, so the stream stays with a turn until its end."""

    def __init__(self, ctx: StreamContext, session_id: int, cursor: Cursor, tokens: bool) -> None:
        super().__init__(ctx, tokens)
        self.session_id = session_id
        self.cursor = cursor

    def read(self, watch: TurnWatch) -> tuple[list[Event], bool]:
        ctx, out = self.ctx, []
        with ctx.connect() as conn:
            from_id = self.cursor.turn_id
            turn_ids = conn.scalars(
                _SESSION_TURNS, {"session_id": self.session_id, "from_id": from_id}
            ).all()
        for turn_id in turn_ids:
            cursor = self.cursor if turn_id == self.cursor.turn_id else Cursor(turn_id)
            if cursor.phase >= ENDED:
                continue
            ctx.events.follow(watch, turn_id)  # before reading it: no change is missed
            with ctx.connect() as conn:
                state = read_turn(conn, turn_id, ctx.user_id, cursor)
            if state is None:
                return out, True  # the session was deleted meanwhile
            events, self.cursor = turn_events_since(state, cursor)
            out.extend(events)
            if self.cursor.phase < ENDED:
                break  # the turns after it wait for its end
        return out, False

    def __iter__(self) -> Iterator[str]:
        ctx = self.ctx
        asking = (
            ctx.events.asking_tokens(session_id=self.session_id)
            if self.tokens
            else nullcontext(_nothing)
        )
        watching = ctx.events.watch(session_id=self.session_id, deltas=self.tokens)
        with watching as watch, asking as refresh:
            yield from self.run(watch, refresh)


def _nothing() -> None:
    pass
