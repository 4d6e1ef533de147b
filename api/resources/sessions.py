"""Chat sessions, scoped to a room or to one agent (fixed at creation)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select

from models import Agent, ChatSession, Room, Turn, lifecycle, utcnow
from models.turns import ACTIVE_STATUSES, PENDING

from ..auth import current_user_id
from ..errors import error_response
from ..ownership import get_owned_or_404
from ..pagination import CursorArgsSchema, page_schema, paginate
from ..quotas import LIMIT_REACHED, limit_reached_message, require_below_cap
from ..schemas.sessions import SessionCreateSchema, SessionSchema, SessionUpdateSchema
from ..state import get_db
from ..webhook_secret import require_secret_for

blp = Blueprint(
    "sessions", __name__, url_prefix="/api/v1", description="Conversations with a room or an agent."
)


def require_live(target: Agent | Room) -> None:
    """A deleted agent or room keeps its history readable but takes no new work."""
    if target.deleted_at is not None:
        abort_deleted(type(target), target.id)


def abort_deleted(model: type[Agent] | type[Room], row_id: int) -> None:
    abort(
        409,
        message=f"{model.__name__} {row_id} was deleted: its sessions stay readable,"
        " but it takes no new sessions or turns.",
        code=f"{model.__name__.lower()}_deleted",
    )


def _scoped_views(model: type[Agent] | type[Room], column: str):
    class ScopedSessions(MethodView):
        @blp.arguments(SessionCreateSchema)
        @blp.response(201, SessionSchema)
        @blp.alt_response(404, description=f"No such {model.__name__.lower()}.")
        @error_response(
            blp,
            409,
            f"The {model.__name__.lower()} was deleted, or you have as many sessions as allowed.",
            {
                f"{model.__name__.lower()}_deleted": f"{model.__name__} 7 was deleted: its"
                " sessions stay readable, but it takes no new sessions or turns.",
                LIMIT_REACHED: limit_reached_message(ChatSession, 100_000),
            },
        )
        def post(self, data, scope_id):
            """Start a session

            A user may have ROOMCAST_MAX_SESSIONS_PER_USER live sessions (409 `limit_reached`
            beyond).
            """
            target = get_owned_or_404(model, scope_id, include_deleted=True)
            require_live(target)
            require_secret_for(data.get("webhook_url"))
            db = get_db()
            require_below_cap(db, ChatSession)
            session = ChatSession(user_id=current_user_id(), **{column: target.id}, **data)
            db.add(session)
            db.commit()
            return session

        @blp.arguments(CursorArgsSchema, location="query")
        @blp.response(200, page_schema(SessionSchema))
        @blp.alt_response(404, description=f"No such {model.__name__.lower()}.")
        def get(self, args, scope_id):
            """List sessions (oldest first unless order=desc)"""
            # Sessions of a deleted agent or room stay readable.
            get_owned_or_404(model, scope_id, include_deleted=True)
            stmt = select(ChatSession).where(
                getattr(ChatSession, column) == scope_id, ChatSession.deleted_at.is_(None)
            )
            return paginate(get_db(), stmt, [ChatSession.id], args)

    return ScopedSessions


class RoomSessions(_scoped_views(Room, "room_id")):
    """Start or list the sessions of a room"""


class AgentSessions(_scoped_views(Agent, "agent_id")):
    """Start or list the standalone sessions of an agent"""


# The classes themselves, not their as_view(): flask-smorest documents only the views it
# builds from a MethodView class.
blp.add_url_rule("/rooms/<int:scope_id>/sessions", "room_sessions", RoomSessions)
blp.add_url_rule("/agents/<int:scope_id>/sessions", "agent_sessions", AgentSessions)


@blp.route("/sessions/<int:session_id>")
class SessionById(MethodView):
    @blp.response(200, SessionSchema)
    @blp.alt_response(404, description="No such session.")
    def get(self, session_id):
        """Get a session"""
        return get_owned_or_404(ChatSession, session_id)

    @blp.arguments(SessionUpdateSchema)
    @blp.response(200, SessionSchema)
    @blp.alt_response(404, description="No such session.")
    def patch(self, data, session_id):
        """Update a session's title, metadata, multitask policy or webhook (its scope is fixed)

        A new webhook applies to the turns posted after it.
        """
        session = get_owned_or_404(ChatSession, session_id)
        require_secret_for(data.get("webhook_url"))
        for key, value in data.items():
            setattr(session, key, value)
        get_db().commit()
        return session

    @blp.response(204)
    @blp.alt_response(404, description="No such session.")
    def delete(self, session_id):
        """Delete a session; its unfinished turns are cancelled"""
        session = get_owned_or_404(ChatSession, session_id, for_update=True)
        db = get_db()
        session.deleted_at = utcnow()
        unfinished = db.scalars(
            select(Turn).where(
                Turn.session_id == session.id, Turn.status.in_((PENDING, *ACTIVE_STATUSES))
            )
        )
        for turn in unfinished:
            lifecycle.cancel(db, turn, stop_reason="session_deleted", promote=False)
        db.commit()
