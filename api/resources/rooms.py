"""Rooms: several agents answering together, with shared instructions and an orchestration."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy.orm import selectinload

from models import Room, RoomAgent, utcnow

from ..auth import current_user_id
from ..errors import error_response
from ..orchestration import apply_orchestration, merge_orchestration
from ..ownership import get_owned_or_404, list_live_named
from ..pagination import invalid_list_args, page_schema
from ..quotas import limit_reached_response, require_below_cap
from ..schemas.base import NameSearchArgsSchema
from ..schemas.rooms import RoomSchema, RoomUpdateSchema
from ..state import get_db

blp = Blueprint(
    "rooms",
    __name__,
    url_prefix="/api/v1/rooms",
    description="Your rooms: agents that answer together, in an orchestration mode.",
)

ROOM_NOT_FOUND = error_response(
    blp, 404, "No such room (or not yours).", {"not_found": "Room 3 not found."}
)
INVALID = error_response(
    blp,
    422,
    "Invalid fields: unknown or read-only, wrong type, out of range, an option of another mode, "
    "an unknown selector agent or model, oversized metadata. Nothing is written.",
    errors={
        "orchestration": {
            "max_rounds": ["Must be greater than or equal to 1 and less than or equal to 20."]
        }
    },
)


def _set_orchestration(room: Room, given: dict, current: Room | None) -> None:
    try:
        apply_orchestration(room, merge_orchestration(given, current))
    except ma.ValidationError as exc:
        abort(422, errors={"orchestration": exc.messages})


@blp.route("")
class Rooms(MethodView):
    @blp.arguments(RoomSchema)
    @blp.response(201, RoomSchema)
    @INVALID
    @limit_reached_response(blp, Room)
    def post(self, data):
        """Create a room

        Only `name` is required; the room starts empty, in `sequential` mode with one round.
        A user may have ROOMCAST_MAX_ROOMS_PER_USER live rooms (409 `limit_reached` beyond).
        """
        given = data.pop("orchestration", {})
        room = Room(user_id=current_user_id(), members=[], **data)
        _set_orchestration(room, given, None)
        db = get_db()
        require_below_cap(db, Room)
        db.add(room)
        db.commit()
        return room

    @blp.arguments(NameSearchArgsSchema, location="query")
    @blp.response(200, page_schema(RoomSchema))
    @invalid_list_args(blp)
    def get(self, args):
        """List my rooms (deleted ones are left out)"""
        return list_live_named(Room, args, selectinload(Room.members).joinedload(RoomAgent.agent))


@blp.route("/<int:room_id>")
class RoomById(MethodView):
    @blp.response(200, RoomSchema)
    @ROOM_NOT_FOUND
    def get(self, room_id):
        """Get a room, with its agents in speaking order"""
        return get_owned_or_404(Room, room_id)

    @blp.arguments(RoomUpdateSchema(partial=True))
    @blp.response(200, RoomSchema)
    @ROOM_NOT_FOUND
    @INVALID
    def patch(self, data, room_id):
        """Change a room

        Send only the fields to change. `orchestration` is merged into the current one (a null
        option clears it; options left over from a previous mode are dropped); `metadata` is
        replaced as a whole. Membership changes through `/rooms/{room_id}/agents`.
        """
        room = get_owned_or_404(Room, room_id)
        if "orchestration" in data:
            _set_orchestration(room, data.pop("orchestration"), room)
        for field, value in data.items():
            setattr(room, field, value)
        get_db().commit()
        return room

    @blp.response(204)
    @ROOM_NOT_FOUND
    def delete(self, room_id):
        """Delete a room

        The room disappears from lists; its sessions, messages and usage stay readable.
        """
        room = get_owned_or_404(Room, room_id)
        room.deleted_at = utcnow()
        get_db().commit()
