"""Users and their API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from .base import Base, IdMixin, TimestampMixin, utcnow

TOKEN_PREFIX = "rc_"


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Per-user preferences and limits (e.g. a usage budget); small JSON object.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", passive_deletes=True)


class ApiToken(IdMixin, Base):
    __tablename__ = "api_tokens"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), default="")
    # Only the SHA-256 of the secret is stored; the secret itself is shown once, at creation.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the secret, so a user can tell their tokens apart in a list.
    token_hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")

    __table_args__ = (Index("ix_api_tokens_user_id_id", "user_id", "id"),)


def hash_token(secret: str) -> str:
    """The stored form of a bearer token: a fast hash is enough for 256 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(
    db: Session, user: User, *, name: str = "", ttl_days: int = 0
) -> tuple[ApiToken, str]:
    """Add a new token for ``user`` (caller commits); returns the row and its one-time secret."""
    secret = new_token_secret()
    now = utcnow()
    token = ApiToken(
        user=user,
        name=name,
        token_hash=hash_token(secret),
        token_hint=secret[: len(TOKEN_PREFIX) + 6],
        created_at=now,
        expires_at=now + timedelta(days=ttl_days) if ttl_days else None,
    )
    db.add(token)
    return token, secret
