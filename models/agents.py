"""Agents: a user's reusable model + system prompt + tool allow-list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, IdMixin, TimestampMixin


class Agent(IdMixin, TimestampMixin, Base):
    __tablename__ = "agents"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    tools: Mapped[list[str]] = mapped_column(default=list)
    # "metadata" is reserved by SQLAlchemy's declarative classes.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # Soft delete: sessions, messages and usage keep referring to a deleted agent.
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        # Names are unique among a user's live agents; a deleted agent frees its name.
        Index(
            "uq_agents_user_id_name_live",
            "user_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_agents_user_id_id", "user_id", "id"),
    )
