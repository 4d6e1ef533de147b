"""Turns: post a message (202, executed by a worker), poll it, cancel it."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import Boolean, Row, bindparam, literal_column, select, update
from sqlalchemy.exc import IntegrityError

from models import Agent, ChatSession, Room, Turn, lifecycle, utcnow
from models.base import UTCDateTime
from models.messages import INSERT_MESSAGE
from models.turn_events import TurnWatch, turn_events
from models.turns import ACTIVE_STATUSES, CANCELLED, PENDING, QUEUED, TERMINAL_STATUSES

from ..auth import current_user_id
from ..ownership import get_owned_or_404, get_turn_or_404
from ..pagination import CursorArgsSchema, page_schema, paginate
from ..schemas.turns import (
    IdempotencyHeaderSchema,
    TurnCreateSchema,
    TurnSchema,
    TurnWaitArgsSchema,
)
from ..state import autocommit_connection, get_db, state
from ..turn_dispatch import dispatch_after_commit
from ..turn_view import (
    INSERT_TURN,
    accepted_turn_view,
    owned_turn_view,
    turn_json,
    turn_view,
    turn_views,
)
from .sessions import abort_deleted

blp = Blueprint("turns", __name__, url_prefix="/api/v1", description="Turns and their lifecycle.")

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Concurrent posts on one session race on the one-active-turn index; the loser re-decides.
MAX_ACCEPT_ATTEMPTS = 5
RETRY_AFTER_SECONDS = "1"


def _fingerprint(session_id: int, data: dict) -> str:
    canonical = json.dumps(
        {
            "session_id": session_id,
            "content": data["content"],
            "metadata": data["meta"],
            "multitask": data.get("multitask"),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _turn_headers(turn_id: int, status: str) -> dict[str, str]:
    headers = {"Location": url_for("turns.TurnById", turn_id=turn_id)}
    if status not in TERMINAL_STATUSES:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return headers


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
_SCOPE_DELETED = literal_column(
    "COALESCE((SELECT deleted_at FROM agents WHERE agents.id = sessions.agent_id),"
    " (SELECT deleted_at FROM rooms WHERE rooms.id = sessions.room_id)) IS NOT NULL",
    Boolean,
)
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
_LOCK_OWNED_SESSION = (
    update(_sessions)
    .where(
        _sessions.c.id == bindparam("sid"),
        _sessions.c.user_id == bindparam("uid"),
        _sessions.c.deleted_at.is_(None),
    )
    .values(updated_at=bindparam("now", type_=UTCDateTime()))
    .returning(
        _sessions.c.id,
        _sessions.c.agent_id,
        _sessions.c.room_id,
        _sessions.c.multitask,
        _SCOPE_DELETED.label("scope_deleted"),
        _ROOM_HAS_AGENTS.label("has_agents"),
    )
)


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


def _accept(session_id: int, data: dict, key: str | None, fingerprint: str):
    """Write the user message and the turn under the session's multitask policy.

    Returns (turn, its view, replayed, ids to dispatch after the commit). The turn and the
    message are written as Core INSERTs: the ORM's unit of work cost more than the statements.
    """
    db = get_db()
    for _ in range(MAX_ACCEPT_ATTEMPTS):
        now = utcnow()
        session = _lock_owned_session(session_id, now)
        if key is not None and (original := _replay(key, fingerprint)) is not None:
            return original, turn_view(db, original), True, []
        busy = db.scalar(_FIRST_UNFINISHED, {"sid": session.id})
        policy = data.get("multitask") or session.multitask
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
                    request_fingerprint=fingerprint if key else None,
                    metadata=data["meta"],
                    created_at=now,
                    updated_at=now,
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
            # Another request won the race (active turn or idempotency key): decide again.
            db.rollback()
            continue
        # The view as committed, without reading it back: the turn has only its input message.
        to_dispatch = [turn.id] if status == QUEUED else []
        return turn, accepted_turn_view(turn, message_id), False, to_dispatch
    abort(
        409, message="The session is too busy to accept this turn now; retry.", code="turn_conflict"
    )


# Instances: given a class, webargs builds a schema on every request.
_CREATE_ARGS = TurnCreateSchema()
_IDEMPOTENCY_HEADERS = IdempotencyHeaderSchema()


@blp.route("/sessions/<int:session_id>/turns")
class SessionTurns(MethodView):
    @blp.arguments(_CREATE_ARGS)
    @blp.arguments(_IDEMPOTENCY_HEADERS, location="headers")
    @blp.response(202, TurnSchema)
    @blp.alt_response(
        200,
        schema=TurnSchema,
        description="Replay: the turn an earlier request with this Idempotency-Key created.",
    )
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(
        409,
        description="Another turn is active (multitask=reject), or the agent "
        "or room was deleted, or the room has no agents.",
    )
    def post(self, data, headers, session_id):
        """Post a message: the turn is queued for a worker (poll its Location)"""
        key = headers.get("idempotency_key")
        turn, view, replayed, to_dispatch = _accept(
            session_id, data, key, _fingerprint(session_id, data)
        )
        dispatch_after_commit(to_dispatch)
        response_headers = _turn_headers(turn.id, turn.status)
        if replayed:
            response_headers["Idempotent-Replayed"] = "true"
        return view, 200 if replayed else 202, response_headers

    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, page_schema(TurnSchema))
    @blp.alt_response(404, description="No such session.")
    def get(self, args, session_id):
        """List a session's turns (newest first unless order=asc)"""
        get_owned_or_404(ChatSession, session_id)
        db = get_db()
        page = paginate(
            db,
            select(Turn).where(Turn.session_id == session_id),
            [Turn.id],
            args,
            default_order="desc",
        )
        page["data"] = turn_views(db, page["data"])
        return page


def _turn_view_or_404(turn_id: int) -> dict:
    with autocommit_connection() as conn:
        view = owned_turn_view(conn, turn_id, current_user_id())
    if view is None:
        abort(404, message=f"Turn {turn_id} not found.")
    return view


def _wait_for_change(view: dict, deadline: float, changed: TurnWatch, until: str) -> dict:
    """Long-poll: wait until the turn ends, or (``until="change"``) differs from what the client
    has, or the deadline.

    What the client has is the If-None-Match ETag if sent, else the status it had on arrival.
    ``changed`` gets the turn's changes (watched since before the first read, so none is lost)
    and the statuses they announce, which often spare reading the turn; it is re-read at least
    once a second anyway, in case a notification was lost.
    """
    turn_id = view["id"]
    status = initial_status = view["status"]
    to_the_end = until == "terminal"
    known_etag = None if to_the_end else request.if_none_match

    def ends(new_status: str | None) -> bool:
        """Whether a turn in ``new_status`` ends the wait (as far as statuses tell)."""
        return new_status in TERMINAL_STATUSES or not (to_the_end or new_status == initial_status)

    def unchanged() -> bool:
        if known_etag and status not in TERMINAL_STATUSES:
            return turn_json(view)[1] in known_etag
        return not ends(status)

    # Every read takes a connection only for its one statement: the wait holds none.
    while unchanged() and (remaining := deadline - time.monotonic()) > 0:
        announced = changed.changes(min(remaining, 1.0))
        told = bool(announced) and not known_etag and None not in announced
        if told and not any(map(ends, announced)):
            continue  # progress of the turn that this wait is not waiting for: nothing to read
        if not (known_etag or told):
            # Not told how it changed: a status-only read, and the whole turn only when its
            # status ends the wait.
            with autocommit_connection() as conn:
                status = conn.scalar(select(Turn.status).where(Turn.id == turn_id))
            if not ends(status):
                continue
        view = _turn_view_or_404(turn_id)
        status = view["status"]
    return view


_WAIT_ARGS = TurnWaitArgsSchema()


@blp.route("/turns/<int:turn_id>", parameters=["IF_NONE_MATCH"])
class TurnById(MethodView):
    @blp.arguments(_WAIT_ARGS, location="query")
    @blp.response(200, TurnSchema, headers={"ETag": "ETAG"})
    @blp.alt_response(304, "NOT_MODIFIED")
    @blp.alt_response(404, description="No such turn.")
    def get(self, args, turn_id):
        """Get a turn; cheap to poll with If-None-Match and ?wait=SECONDS[&until=terminal]"""
        if args["wait"] > 0:
            deadline = time.monotonic() + args["wait"]
            with turn_events(state().settings.broker_url).watch(turn_id) as changed:
                view = _turn_view_or_404(turn_id)
                if view["status"] not in TERMINAL_STATUSES:
                    view = _wait_for_change(view, deadline, changed, args["until"])
        else:
            view = _turn_view_or_404(turn_id)
        body, etag = turn_json(view)
        # ETag and 304 handled here, not by flask-smorest's @etag: it dumps and serialises the
        # turn again to hash it, and answers a 304 by raising after building the 200.
        if etag in request.if_none_match:
            response = current_app.response_class(status=304)
        else:
            response = current_app.response_class(
                body,
                mimetype=current_app.json.mimetype,
                headers=_turn_headers(view["id"], view["status"]),
            )
        response.set_etag(etag)
        return response


@blp.route("/turns/<int:turn_id>/cancel")
class TurnCancel(MethodView):
    @blp.response(200, TurnSchema)
    @blp.alt_response(404, description="No such turn.")
    @blp.alt_response(409, description="The turn already completed or failed.")
    def post(self, turn_id):
        """Cancel a turn: at once if waiting, at the next step boundary if running"""
        db = get_db()
        turn = get_turn_or_404(turn_id)
        if turn.status == CANCELLED:
            return turn_view(db, turn)  # idempotent
        if turn.status in TERMINAL_STATUSES:
            abort(409, message=f"Turn {turn_id} is already {turn.status}.", code="turn_finished")
        promoted = lifecycle.cancel(db, turn, stop_reason="cancelled")
        db.commit()
        if turn.status != CANCELLED:  # it finished in the meantime
            abort(409, message=f"Turn {turn_id} is already {turn.status}.", code="turn_finished")
        dispatch_after_commit([promoted])
        turn_events(state().settings.broker_url).publish(turn_id, CANCELLED)
        return turn_view(db, turn)
