"""Server-sent event streams: a turn's events as they are committed, or a session's turns."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from models import ChatSession
from models.turn_events import turn_events

from ..auth import current_user_id
from ..ownership import get_owned_or_404
from ..schemas.events import StreamArgsSchema, StreamHeadersSchema
from ..state import state
from ..streams import (
    ENDED,
    EVENT_NAMES,
    Cursor,
    SessionStream,
    StreamContext,
    TurnStream,
    session_start,
)
from ..turn_view import owns_turn

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1",
    description="Server-sent event streams of turns and sessions (text/event-stream).",
)

_ARGS = StreamArgsSchema()
_HEADERS = StreamHeadersSchema()
# One event of the stream, as its fields (the text/event-stream format is a list of them).
_EVENT_STREAM = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": list(EVENT_NAMES)},
        "data": {"type": "string", "description": "A JSON object; each has `turn_id`."},
        "id": {"type": "string", "description": "The cursor after a committed event."},
    },
}
_STREAM_DESCRIPTION = (
    "An event stream. Committed events (`status`, `plan`, `message`, `tool_call`, "
    "`tool_result`, `usage`, `progress`, `end`) carry an `id` to resume after with "
    "Last-Event-ID; `delta` and `superseded` (with tokens=true) carry none. Each event's data "
    "is a JSON object with `turn_id`. Comment lines are heartbeats."
)


def _context() -> StreamContext:
    """What the stream needs, taken from the request: the stream runs outside of it."""
    app_state = state()
    engine = app_state.engine
    return StreamContext(
        settings=app_state.settings,
        events=turn_events(app_state.settings.broker_url),
        # As autocommit_connection(): one statement, one commit, no transaction held.
        connect=lambda: engine.connect().execution_options(isolation_level="AUTOCOMMIT"),
        user_id=current_user_id(),
    )


def _cursor(args: dict, headers: dict) -> Cursor | None:
    return headers.get("last_event_id") or args.get("last_event_id")


def _event_stream(stream) -> object:
    # A plain generator, not stream_with_context: it needs nothing of the request, and holds
    # neither its context nor a database connection while it waits.
    response = current_app.response_class(iter(stream), mimetype="text/event-stream")
    # No proxy may buffer or transform the stream, nor a cache keep it.
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@blp.route("/turns/<int:turn_id>/events")
class TurnEventStream(MethodView):
    @blp.arguments(_ARGS, location="query")
    @blp.arguments(_HEADERS, location="headers")
    @blp.response(
        200, _EVENT_STREAM, content_type="text/event-stream", description=_STREAM_DESCRIPTION
    )
    @blp.alt_response(204, description="The stream had already sent the turn's end.")
    @blp.alt_response(404, description="No such turn.")
    @blp.alt_response(422, description="A bad argument, or an event id of another turn.")
    def get(self, args, headers, turn_id):
        """Stream a turn's events until its end (resumable with Last-Event-ID)"""
        cursor = _cursor(args, headers)
        ctx = _context()
        with ctx.connect() as conn:  # not the ORM's session: a stream is opened per turn
            if not owns_turn(conn, turn_id, ctx.user_id):
                abort(404, message=f"Turn {turn_id} not found.")
        if cursor is not None and cursor.turn_id != turn_id:
            abort(
                422,
                message="Last-Event-ID is an event id of another turn.",
                errors={"last_event_id": ["Not an event id of this stream."]},
            )
        if cursor is not None and cursor.phase >= ENDED:
            # Everything was sent: 204 tells an EventSource to stop reconnecting.
            return current_app.response_class(status=204)
        return _event_stream(TurnStream(ctx, turn_id, cursor or Cursor(turn_id), args["tokens"]))


@blp.route("/sessions/<int:session_id>/events")
class SessionEventStream(MethodView):
    @blp.arguments(_ARGS, location="query")
    @blp.arguments(_HEADERS, location="headers")
    @blp.response(
        200, _EVENT_STREAM, content_type="text/event-stream", description=_STREAM_DESCRIPTION
    )
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(422, description="A bad argument.")
    def get(self, args, headers, session_id):
        """Stream the events of a session's turns, one turn after the other (no end)"""
        get_owned_or_404(ChatSession, session_id)
        ctx, cursor = _context(), _cursor(args, headers)
        if cursor is None:
            with ctx.connect() as conn:
                cursor = session_start(conn, session_id)
        return _event_stream(SessionStream(ctx, session_id, cursor, args["tokens"]))
