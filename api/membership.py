"""Room membership: which agents are in a room, in speaking order.

Positions are dense, 0 to n-1, in the order the room's agents speak: inserting or moving an
agent shifts the others, removing one closes the gap. These operations only change the session;
the view commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Agent, Room, RoomAgent

MAX_ROOM_AGENTS = 32


def _renumber(members: Sequence[RoomAgent]) -> None:
    for position, member in enumerate(members):
        if member.position != position:
            member.position = position


def add_member(room: Room, agent: Agent, position: int | None = None) -> RoomAgent:
    """Put the agent in the room at ``position`` (default, or past the end: last); 409 if it is
    there already or the room is full."""
    members = room.members
    if any(member.agent_id == agent.id for member in members):
        abort(
            409,
            message=f"Agent {agent.id} is already in room {room.id}.",
            code="agent_in_room",
        )
    if len(members) >= MAX_ROOM_AGENTS:
        abort(
            409,
            message=f"Room {room.id} has {len(members)} agents, the most a room may have.",
            code="room_full",
        )
    member = RoomAgent(agent=agent, position=len(members))
    members.insert(len(members) if position is None else position, member)
    _renumber(members)
    return member


def move_member(room: Room, member: RoomAgent, position: int) -> None:
    """Move a member to ``position`` (past the end: last); the others keep their order."""
    order = [other for other in room.members if other is not member]
    order.insert(position, member)
    _renumber(order)


def remove_member(room: Room, member: RoomAgent) -> None:
    room.members.remove(member)  # delete-orphan: the row goes at flush
    _renumber(room.members)


def find_member_or_404(room: Room, agent_id: int) -> RoomAgent:
    for member in room.members:
        if member.agent_id == agent_id:
            return member
    abort(404, message=f"Agent {agent_id} is not in room {room.id}.")


def leave_all_rooms(db: Session, agent: Agent) -> None:
    """Take a deleted agent out of every room it is in."""
    rooms = db.scalars(
        select(Room).join(RoomAgent).where(RoomAgent.agent_id == agent.id).with_for_update(of=Room)
    )
    for room in rooms:
        remove_member(room, find_member_or_404(room, agent.id))
