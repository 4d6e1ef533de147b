"""A session's history."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from models import ChatSession, Message

from ..ownership import get_owned_or_404
from ..pagination import page_schema, paginate
from ..schemas.messages import MessageArgsSchema, MessageSchema
from ..state import get_db

blp = Blueprint("messages", __name__, url_prefix="/api/v1", description="Session history.")


@blp.route("/sessions/<int:session_id>/messages")
class SessionMessages(MethodView):
    @blp.arguments(MessageArgsSchema, location="query")
    @blp.response(200, page_schema(MessageSchema))
    @blp.alt_response(404, description="No such session.")
    def get(self, args, session_id):
        """Read the history, oldest first (order=desc for newest first); filter by turn_id"""
        get_owned_or_404(ChatSession, session_id)
        stmt = select(Message)
        if "turn_id" in args:
            stmt = stmt.where(Message.turn_id == args["turn_id"])
        return paginate(get_db(), stmt, [Message.id], args, within=(Message.session_id, session_id))
