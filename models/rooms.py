"""Rooms and their membership (the room_agents join table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .agents import Agent
from .base import Base, IdMixin, TimestampMixin, utcnow

ROOM_MODES = ("sequential", "round_robin", "mention", "supervisor")


class Room(IdMixin, TimestampMixin, Base):
    __tablename__ = "rooms"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # Shared context every agent in the room sees.
    instructions: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(20), default="sequential")
    max_rounds: Mapped[int] = mapped_column(Integer, default=1)
    # Mode-specific options (supervisor selector, default speaker...).
    orchestration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    deleted_at: Mapped[datetime | None]

    members: Mapped[list[RoomAgent]] = relationship(
        back_populates="room",
        order_by="(RoomAgent.position, RoomAgent.agent_id)",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (Index("ix_rooms_user_id_id", "user_id", "id"),)


class RoomAgent(Base):
    """An agent assigned to a room, at a position in the speaking order (one row per pair)."""

    __tablename__ = "room_agents"

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    room: Mapped[Room] = relationship(back_populates="members")
    agent: Mapped[Agent] = relationship()

    __table_args__ = (
        Index("ix_room_agents_room_id_position", "room_id", "position"),
        Index("ix_room_agents_agent_id", "agent_id"),
    )
