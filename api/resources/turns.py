"""Turns: post a message (202, executed by a worker), poll it, cancel it."""

from __future__ import annotations

import time

from flask import current_app, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import bindparam, select

from models import ChatSession, Turn, lifecycle, metrics
from models.turn_events import TurnWatch, safety_reread_delay, turn_events
from models.turn_view import TurnSchema
from models.turns import CANCELLED, TERMINAL_STATUSES

from ..auth import current_user_id
from ..ownership import get_owned_or_404, get_turn_or_404
from ..pagination import CursorArgsSchema, page_schema, paginate
from ..schemas.turns import IdempotencyHeaderSchema, TurnCreateSchema, TurnWaitArgsSchema
from ..state import autocommit_connection, get_db, state
from ..turn_accept import accept
from ..turn_dispatch import dispatch_after_commit
from ..turn_view import (
    owned_turn_view,
    shared_ended_turn_view,
    turn_json,
    turn_view,
    turn_views,
)

blp = Blueprint("turns", __name__, url_prefix="/api/v1", description="Turns and their lifecycle.")

RETRY_AFTER_SECONDS = "1"


def _poll_headers(status: str) -> dict[str, str]:
    """A turn's answer to a poll: when to look again, while it is not over."""
    return {} if status in TERMINAL_STATUSES else {"Retry-After": RETRY_AFTER_SECONDS}


def _accepted_headers(turn_id: int, status: str) -> dict[str, str]:
    """A POST's answer: where the new turn is (a poll's answer has no Location: the client has
    the URL, and werkzeug re-encodes every Location as an IRI, a tenth of a woken answer's CPU)."""
    return {"Location": url_for("turns.TurnById", turn_id=turn_id), **_poll_headers(status)}


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
        turn, view, replayed, to_dispatch = accept(session_id, data, key)
        dispatch_after_commit(to_dispatch)
        response_headers = _accepted_headers(turn.id, turn.status)
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


def _read_turn_view(turn_id: int, user_id: int) -> dict | None:
    with autocommit_connection() as conn:
        return owned_turn_view(conn, turn_id, user_id)


def _turn_view_or_404(turn_id: int, *, woken: bool = False) -> dict:
    """The user's view of the turn, or 404. ``woken``: read by a waiter that a change woke,
    in a read shared with the other waiters of the turn when it ended."""
    user_id = current_user_id()
    if woken:
        view = shared_ended_turn_view(turn_id, user_id, lambda: _read_turn_view(turn_id, user_id))
    else:
        view = _read_turn_view(turn_id, user_id)
    if view is None:
        abort(404, message=f"Turn {turn_id} not found.")
    return view


# A waiter's unprompted read (every 10-15 s), built once: building it cost about as much as
# running it.
_TURN_STATUS = select(Turn.__table__.c.status).where(Turn.__table__.c.id == bindparam("turn_id"))


def _wait_for_change(view: dict, deadline: float, changed: TurnWatch, until: str) -> dict:
    """Long-poll: wait until the turn ends, or (``until="change"``) differs from what the client
    has, or the deadline.

    What the client has is the If-None-Match ETag if sent, else the status it had on arrival.
    ``changed`` gets the turn's changes (watched since before the first read, so none is lost)
    and the statuses they announce, which often spare reading the turn. Without a notification
    the turn is read only every 10-15 s (jittered): a notification can only be lost while the
    Redis listener resubscribes, and then it wakes every waiter (models/turn_events.py).
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

    next_check = time.monotonic() + safety_reread_delay()
    # Every read takes a connection only for its one statement: the wait holds none.
    while unchanged() and (remaining := deadline - time.monotonic()) > 0:
        announced = changed.changes(min(remaining, max(0.0, next_check - time.monotonic())))
        if not announced:
            if time.monotonic() < next_check:
                continue  # the deadline: answered with the turn as last read
            next_check = time.monotonic() + safety_reread_delay()
        told = bool(announced) and not known_etag and None not in announced
        if told and not any(map(ends, announced)):
            continue  # progress of the turn that this wait is not waiting for: nothing to read
        if not (known_etag or told):
            # Not told how it changed: a status-only read, and the whole turn only when its
            # status ends the wait.
            with autocommit_connection() as conn:
                status = conn.scalar(_TURN_STATUS, {"turn_id": turn_id})
            if not ends(status):
                continue
        view = _turn_view_or_404(turn_id, woken=True)
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
                headers=_poll_headers(view["status"]),
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
        turn_events(state().settings.broker_url).publish(turn_id, CANCELLED, turn.session_id)
        metrics.TURNS_ENDED.labels(CANCELLED, turn.stop_reason or "").inc()
        return turn_view(db, turn)
