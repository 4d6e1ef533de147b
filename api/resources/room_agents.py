"""Room membership: assign your agents to your rooms, in speaking order."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from models import Agent, Room, RoomAgent

from ..errors import error_response
from ..membership import (
    MAX_ROOM_AGENTS,
    add_member,
    find_member_or_404,
    move_member,
    remove_member,
)
from ..ownership import get_owned_or_404
from ..pagination import CursorArgsSchema, invalid_list_args, page_schema, paginate
from ..schemas.rooms import RoomAgentCreateSchema, RoomAgentSchema, RoomAgentUpdateSchema
from ..state import get_db

blp = Blueprint(
    "room-agents",
    __name__,
    url_prefix="/api/v1/rooms/<int:room_id>/agents",
    description="Which of your agents are in a room, and in what order they speak.",
)

ROOM_NOT_FOUND = error_response(
    blp, 404, "No such room (or not yours).", {"not_found": "Room 3 not found."}
)
MEMBER_NOT_FOUND = error_response(
    blp,
    404,
    "No such room (or not yours), or the agent is not in it.",
    {"not_found": "Agent 7 is not in room 3."},
)
INVALID = error_response(
    blp,
    422,
    "Invalid fields: unknown, wrong type or out of range. Nothing is written.",
    errors={"position": ["Must be greater than or equal to 0 and less than or equal to 31."]},
)


@blp.route("")
class RoomAgents(MethodView):
    @blp.arguments(RoomAgentCreateSchema)
    @blp.response(201, RoomAgentSchema)
    @error_response(
        blp,
        404,
        "No such room, or no such live agent (either not yours).",
        {"not_found": "Agent 7 not found."},
    )
    @error_response(
        blp,
        409,
        "The agent is already in the room, or the room is full.",
        {
            "agent_in_room": "Agent 7 is already in room 3.",
            "room_full": f"Room 3 has {MAX_ROOM_AGENTS} agents, the most a room may have.",
        },
    )
    @INVALID
    def post(self, data, room_id):
        """Put an agent in a room

        At `position` (0-based; the agents from there move down one), or last by default.
        """
        # Agent first, then room: the order an agent's deletion locks them in, so neither can
        # slip past the other (a deleted agent left in a room) and they never deadlock.
        agent = get_owned_or_404(Agent, data["agent_id"], for_update=True)
        room = get_owned_or_404(Room, room_id, for_update=True)
        member = add_member(room, agent, data.get("position"))
        db = get_db()
        try:
            db.commit()
        except IntegrityError:
            # A concurrent request put the same agent in first (the pair is the primary key).
            db.rollback()
            abort(
                409, message=f"Agent {agent.id} is already in room {room_id}.", code="agent_in_room"
            )
        return member

    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, page_schema(RoomAgentSchema))
    @invalid_list_args(blp)
    @ROOM_NOT_FOUND
    def get(self, args, room_id):
        """List a room's agents in speaking order"""
        room = get_owned_or_404(Room, room_id)
        stmt = (
            select(RoomAgent)
            .where(RoomAgent.room_id == room.id)
            .options(joinedload(RoomAgent.agent))
        )
        return paginate(get_db(), stmt, [RoomAgent.position, RoomAgent.agent_id], args)


@blp.route("/<int:agent_id>")
class RoomAgentById(MethodView):
    @blp.arguments(RoomAgentUpdateSchema)
    @blp.response(200, RoomAgentSchema)
    @MEMBER_NOT_FOUND
    @INVALID
    def patch(self, data, room_id, agent_id):
        """Move an agent to another place in the speaking order

        The other agents keep their order around it; a position past the end means last.
        """
        room = get_owned_or_404(Room, room_id, for_update=True)
        member = find_member_or_404(room, agent_id)
        move_member(room, member, data["position"])
        get_db().commit()
        return member

    @blp.response(204)
    @MEMBER_NOT_FOUND
    def delete(self, room_id, agent_id):
        """Take an agent out of a room (the agent itself stays)"""
        room = get_owned_or_404(Room, room_id, for_update=True)
        remove_member(room, find_member_or_404(room, agent_id))
        get_db().commit()
