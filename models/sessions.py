"""Chat sessions: a conversation with one agent (standalone) or with a room."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, IdMixin, TimestampMixin

# What a POST of a new turn gets while another turn of the session is active.
MULTITASK_POLICIES = ("reject", "enqueue", "interrupt")


class ChatSession(IdMixin, TimestampMixin, Base):
    __tablename__ = "sessions"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Exactly one of room_id / agent_id is set, fixed at creation (ck_sessions_scope).
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    title: Mapped[str] = mapped_column(String(200), default="")
    multitask: Mapped[str] = mapped_column(String(20), default="reject")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # The webhook of the session's turns unless a turn names its own (README "Webhooks").
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("(room_id IS NULL) <> (agent_id IS NULL)", name="scope"),
        Index("ix_sessions_user_id_id", "user_id", "id"),
        Index("ix_sessions_room_id_id", "room_id", "id"),
        Index("ix_sessions_agent_id_id", "agent_id", "id"),
    )

    @property
    def scope(self) -> str:
        return "room" if self.room_id is not None else "agent"
