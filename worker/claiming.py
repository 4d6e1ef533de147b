"""Claiming a turn and loading what an attempt needs to run it.

The claim is a conditional UPDATE (models.lifecycle.CLAIM): a duplicate delivery, a finished
turn or one running under another attempt's lease claims nothing. On PostgreSQL the load reads
the claimed row in the claim's own statement.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from models import Agent, ChatSession, Message, Room, RoomAgent, Turn, User, lifecycle

from .context import Speaker


class TurnFailure(Exception):
    """A domain reason the turn cannot go on; ``code`` is shown to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


AGENT_FIELDS = (
    "id",
    "name",
    "provider",
    "model",
    "system_prompt",
    "temperature",
    "max_tokens",
    "tools",
)


def speaker(agent: Agent) -> Speaker:
    return _speaker_of(*(getattr(agent, name) for name in AGENT_FIELDS))


def _speaker_of(*values: Any) -> Speaker:
    """A Speaker from an agent's AGENT_FIELDS values."""
    *fields, tools = values
    return Speaker(*fields, tools=tuple(tools or ()))


@dataclass
class TurnRun:
    """What one attempt knows about its turn, loaded once at the start."""

    turn_id: int
    attempt: int
    user_id: int
    session_id: int
    room_id: int | None
    content: str
    input_message_id: int | None  # the user's message: the turn sees nothing posted after it
    mode: str
    rounds: int
    options: dict[str, Any]
    instructions: str
    members: list[Speaker]
    last_step: int  # the last step written before this attempt (resuming)
    user_settings: dict[str, Any] | None
    progress: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None  # when the turn was accepted

    @cached_property
    def names(self) -> dict[int, str]:
        return {m.id: m.name for m in self.members}


# What an attempt needs to know about its turn, in one query: the turn, its session, the user's
# settings, the user's message, the last step written (by an earlier attempt, when resuming),
# and a standalone session's agent. Core on the tables: loading an Agent entity through the
# ORM cost more than the query.
_turns, _messages = Turn.__table__, Message.__table__
_session_t, _user_t, _agent_t = ChatSession.__table__, User.__table__, Agent.__table__
_written = _messages.alias("written")


def _loading(turn):
    """The load of ``turn``: the turns table, or the claim's RETURNING."""
    return select(
        turn.c.attempt,
        turn.c.user_id,
        turn.c.session_id,
        turn.c.progress,
        turn.c.created_at,
        _session_t.c.room_id,
        _user_t.c.settings,
        _messages.c.id,
        _messages.c.content,
        select(func.max(_written.c.step))
        .where(_written.c.turn_id == turn.c.id)
        .correlate(turn)
        .scalar_subquery(),
        *(_agent_t.c[name] for name in AGENT_FIELDS),
    ).select_from(
        turn.join(_session_t, _session_t.c.id == turn.c.session_id)
        .join(_user_t, _user_t.c.id == turn.c.user_id)
        .outerjoin(_messages, (_messages.c.turn_id == turn.c.id) & (_messages.c.step == 0))
        .outerjoin(_agent_t, _agent_t.c.id == _session_t.c.agent_id)
    )


_LOAD_TURN = _loading(_turns).where(_turns.c.id == bindparam("turn_id"))
# The claim and the load in one statement on PostgreSQL, the load reading the claimed row.
_CLAIM_AND_LOAD = _loading(
    lifecycle.CLAIM.returning(
        _turns.c.id, _turns.c.user_id, _turns.c.session_id, _turns.c.progress, _turns.c.created_at
    ).cte("claimed")
)


def claim(s: Session, turn_id: int, lease: timedelta) -> Row | None:
    """Claim the turn; returns its load (a row of _loading), or None if it is not claimable
    (finished, running under another attempt's lease, or gone)."""
    if s.get_bind().dialect.name == "postgresql":
        return s.execute(_CLAIM_AND_LOAD, lifecycle.claim_params(turn_id, lease)).one_or_none()
    if lifecycle.claim(s, turn_id, lease=lease) is None:
        return None
    return s.execute(_LOAD_TURN, {"turn_id": turn_id}).one()


def run_of(s: Session, turn_id: int, loaded: Row) -> TurnRun:
    """What the attempt that claimed the turn (``loaded``: claim's row) needs to run it."""
    (
        attempt,
        user_id,
        session_id,
        progress,
        created_at,
        room_id,
        user_settings,
        input_id,
        content,
        last,
        *agent,
    ) = loaded
    common = dict(
        turn_id=turn_id,
        attempt=attempt,
        user_id=user_id,
        session_id=session_id,
        content=content or "",
        input_message_id=input_id,
        last_step=last or 0,
        user_settings=user_settings,
        progress=copy.deepcopy(progress or {}),
        created_at=created_at,
    )
    if agent[0] is not None:
        return TurnRun(
            room_id=None,
            mode="standalone",
            rounds=1,
            options={},
            instructions="",
            members=[_speaker_of(*agent)],
            **common,
        )
    room = s.get(Room, room_id)
    agents = s.scalars(
        select(Agent)
        .join(RoomAgent, RoomAgent.agent_id == Agent.id)
        .where(RoomAgent.room_id == room.id, Agent.deleted_at.is_(None))
        .order_by(RoomAgent.position, RoomAgent.agent_id)
    ).all()
    if not agents:
        raise TurnFailure("room_empty", f"Room {room.id} has no agents to answer.")
    return TurnRun(
        room_id=room.id,
        mode=room.mode,
        rounds=room.max_rounds,
        options=dict(room.orchestration or {}),
        instructions=room.instructions,
        members=[speaker(a) for a in agents],
        **common,
    )
