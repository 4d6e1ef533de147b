"""Turns: one user message and the work the worker does to answer it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, IdMixin, TimestampMixin

# pending: accepted behind the session's active turn (multitask=enqueue), not yet runnable.
# queued: runnable, waiting for (or sent to) a worker. running: claimed under a lease.
PENDING, QUEUED, RUNNING = "pending", "queued", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
TURN_STATUSES = (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
ACTIVE_STATUSES = (QUEUED, RUNNING)
TERMINAL_STATUSES = (COMPLETED, FAILED, CANCELLED)

_ACTIVE_SQL = text("status IN ('queued', 'running')")
_UNFINISHED_SQL = text("status IN ('pending', 'queued', 'running')")
_RUNNING_SQL = text("status = 'running'")
_QUEUED_SQL = text("status = 'queued'")

# A turn's webhook delivery (README "Webhooks"): pending from the turn's acceptance until its end
# is delivered, or until it failed for good.
WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"
WEBHOOK_STATUSES = (WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED)
_WEBHOOK_PENDING_SQL = text("webhook_status = 'pending'")


class Turn(IdMixin, TimestampMixin, Base):
    __tablename__ = "turns"

    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    # Denormalised owner, so ownership checks and usage queries need no join.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    stop_reason: Mapped[str | None] = mapped_column(String(50))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    # How many times a worker has claimed this turn (redeliveries and reaper take-overs count).
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    # Outbox: when the execute task was last handed to the broker; NULL while it still must be
    # (the broker was down). Set optimistically in the accepting transaction and cleared if the
    # send fails, so the happy path costs no extra write.
    dispatched_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Per-agent progress of a room turn, written by the worker.
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Usage totals, kept equal to the sum of the turn's usage_records by writing both in one
    # transaction, so a poll reads them without an aggregate query.
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cost: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0), server_default="0")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # The URL the turn's end is POSTed to (its own, or its session's when it was accepted; NULL:
    # none), and the delivery's state. webhook_next_attempt_at is the outbox: the UPDATE that
    # ends the turn sets it (models.lifecycle), so no end is missed, and the webhook sweep
    # sends every pending delivery it finds due.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_status: Mapped[str | None] = mapped_column(String(20))
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_last_status: Mapped[int | None] = mapped_column(Integer)  # the last HTTP status
    webhook_last_error: Mapped[str | None] = mapped_column(String(50))  # when none came back
    webhook_next_attempt_at: Mapped[datetime | None]

    __table_args__ = (
        # One active turn per session, enforced by the database itself.
        Index(
            "uq_turns_session_id_active",
            "session_id",
            unique=True,
            sqlite_where=_ACTIVE_SQL,
            postgresql_where=_ACTIVE_SQL,
        ),
        Index(
            "uq_turns_user_id_idempotency_key",
            "user_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_turns_session_id_id", "session_id", "id"),
        # A session's unfinished turns, read by every turn POST and every promotion: a few rows
        # in a small index, where the status index is crowded with finished turns' entries.
        Index(
            "ix_turns_session_id_unfinished",
            "session_id",
            "id",
            sqlite_where=_UNFINISHED_SQL,
            postgresql_where=_UNFINISHED_SQL,
        ),
        # The reaper's running turns and the outbox sweep's queued ones, in id order: partial,
        # so a turn leaves them when it ends (full indexes kept every finished turn, and each
        # end of a turn wrote entries to them), and neither indexes the lease or the dispatch
        # time, so renewing a lease or marking a dispatch can be a HOT update.
        Index("ix_turns_running", "id", sqlite_where=_RUNNING_SQL, postgresql_where=_RUNNING_SQL),
        Index("ix_turns_queued", "id", sqlite_where=_QUEUED_SQL, postgresql_where=_QUEUED_SQL),
        # The webhook sweep's due deliveries: only turns with a webhook still to deliver.
        Index(
            "ix_turns_webhook_due",
            "webhook_next_attempt_at",
            sqlite_where=_WEBHOOK_PENDING_SQL,
            postgresql_where=_WEBHOOK_PENDING_SQL,
        ),
    )
