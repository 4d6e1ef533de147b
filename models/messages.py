"""Messages: the session's history, written by the API (user) and the worker (replies)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, insert
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, IdMixin, utcnow

MESSAGE_ROLES = ("user", "assistant", "tool", "system")
# shared: in the room's transcript; private: seen only by its author agent (tool calls, results).
VISIBILITIES = ("shared", "private")


class Message(IdMixin, Base):
    __tablename__ = "messages"

    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    # Step 0 is the user's message; the worker numbers what it writes from 1.
    step: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    visibility: Mapped[str] = mapped_column(String(10), default="shared")
    content: Mapped[str] = mapped_column(Text, default="")
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column()
    tool_call_id: Mapped[str | None] = mapped_column(String(100))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # A redelivered turn resumes without writing a step twice.
        UniqueConstraint("turn_id", "step"),
        Index("ix_messages_session_id_id", "session_id", "id"),
        Index("ix_messages_turn_id_id", "turn_id", "id"),
    )


# The columns of a message as it is written (its id aside), in the order the API shows them.
WRITTEN_COLUMNS = (
    "session_id",
    "turn_id",
    "step",
    "role",
    "agent_id",
    "visibility",
    "content",
    "tool_calls",
    "tool_call_id",
    "metadata",
    "created_at",
)

# Built once and run as Core (a user's message): a statement built per call costs about as much
# CPU as running it. Keys are column names.
INSERT_MESSAGE = insert(Message.__table__).returning(Message.__table__.c.id)
