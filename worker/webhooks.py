"""Delivering a turn's end to its webhook: one attempt per task, signed, retried with backoff.

- An attempt is claimed by a conditional UPDATE on the number of attempts made so far (the
  task's argument), so two copies of one task (the send after the turn's end and the sweep's,
  a redelivery) never both POST. The claim holds the delivery for ATTEMPT_LEASE: a worker dying
  in the middle leaves it to the sweep after that.
- The body is the turn's JSON as GET /api/v1/turns/{id} answers it at that moment (its
  ``webhook`` showing this attempt), signed per Standard Webhooks with the owner's secret. The
  ``webhook-id`` is the same on every attempt (at least once: receivers deduplicate by it).
- A 2xx delivers it. A 5xx, a 429 or a network failure is tried again after
  ROOMCAST_WEBHOOK_RETRY_BASE_SECONDS, doubling up to an hour (or later, if the answer's
  Retry-After says so), until ROOMCAST_WEBHOOK_RETRY_WINDOW_SECONDS after the turn's end;
  anything else fails it at once. A retry due within a minute is sent with a countdown; later
  ones are sent by the webhook sweep when due (a broker holds a delayed message only until its
  visibility timeout, then hands it out again).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from standardwebhooks import Webhook

from models import WebhookSecret, utcnow
from models.base import UTCDateTime
from models.metrics import WEBHOOK_ATTEMPTS
from models.settings import Settings
from models.turn_view import read_turn_view, turn_json, webhook_id
from models.turns import (
    TERMINAL_STATUSES,
    WEBHOOK_DELIVERED,
    WEBHOOK_FAILED,
    WEBHOOK_PENDING,
    Turn,
)
from models.webhook_dispatch import TaskSender, send_deliveries
from models.webhook_secrets import UnreadableSecret, unseal

from . import db, outbound

log = logging.getLogger(__name__)

SECRET_UNREADABLE = "secret_unreadable"
MAX_DELAY = timedelta(hours=1)
MAX_COUNTDOWN = timedelta(minutes=1)
USER_AGENT = "Roomcast-Webhooks/1"

_t = Turn.__table__
# The turn's webhook is pending after this many attempts: each attempt number is claimed once.
_PENDING_AFTER = (
    _t.c.id == bindparam("turn_id"),
    _t.c.webhook_status == WEBHOOK_PENDING,
    _t.c.webhook_attempts == bindparam("attempts_made"),
)
_CLAIM = (
    update(_t)
    .where(*_PENDING_AFTER, _t.c.status.in_(TERMINAL_STATUSES))
    .values(
        webhook_attempts=_t.c.webhook_attempts + 1,
        webhook_next_attempt_at=bindparam("held_until", type_=UTCDateTime()),
    )
    .returning(
        _t.c.user_id, _t.c.webhook_url, _t.c.webhook_attempts, _t.c.created_at, _t.c.completed_at
    )
)
# Fenced on the attempt: one that outlived its lease (the sweep sent the next) records nothing.
_RECORD = (
    update(_t)
    .where(*_PENDING_AFTER)
    .values(
        webhook_status=bindparam("new_status"),
        webhook_last_status=bindparam("last_status"),
        webhook_last_error=bindparam("last_error"),
        webhook_next_attempt_at=bindparam("next_attempt_at", type_=UTCDateTime()),
    )
)


def attempt_lease(settings: Settings) -> timedelta:
    """How long a claimed attempt holds the delivery: its connects and its answer, with room."""
    return timedelta(seconds=3 * settings.webhook_timeout_seconds + 30)


def retry_delay(attempt: int, settings: Settings) -> timedelta:
    """The wait after the ``attempt``-th failed attempt: doubling, jittered, at most an hour."""
    seconds = settings.webhook_retry_base_seconds * 2 ** min(attempt - 1, 30)
    return min(timedelta(seconds=seconds * random.uniform(0.8, 1.2)), MAX_DELAY)


def signed_headers(secret: str, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


def next_state(
    outcome: outbound.Outcome,
    attempt: int,
    ended_at: datetime,
    now: datetime,
    settings: Settings,
) -> tuple[str, datetime | None]:
    """The delivery's status after ``outcome``, and when the next attempt is due."""
    if outcome.succeeded:
        return WEBHOOK_DELIVERED, None
    if not outcome.transient:
        return WEBHOOK_FAILED, None
    # Retry-After is the soonest the receiver wants us back: never earlier than the backoff.
    delay = max(retry_delay(attempt, settings), timedelta(seconds=outcome.retry_after or 0))
    due = now + delay
    if due > ended_at + timedelta(seconds=settings.webhook_retry_window_seconds):
        return WEBHOOK_FAILED, None
    return WEBHOOK_PENDING, due


def deliver(turn_id: int, attempts_made: int, settings: Settings, sender: TaskSender) -> None:
    """Make the turn's next webhook attempt, if it is still the ``attempts_made + 1``-th."""
    now = utcnow()
    with db.session() as s, s.begin():
        claimed = s.execute(
            _CLAIM,
            {
                "turn_id": turn_id,
                "attempts_made": attempts_made,
                "held_until": now + attempt_lease(settings),
            },
        ).one_or_none()
        if claimed is None:
            log.info("webhook of turn %s: attempt %s taken or not due", turn_id, attempts_made + 1)
            return
        view = read_turn_view(s.connection(), turn_id)
        sealed = s.scalar(
            select(WebhookSecret.sealed).where(WebhookSecret.user_id == claimed.user_id)
        )
    attempt = claimed.webhook_attempts
    try:
        if sealed is None:
            raise UnreadableSecret
        secret = unseal(sealed, settings.secret_key)
    except UnreadableSecret:
        log.error(
            "webhook of turn %s: the owner's signing secret is missing or was sealed with"
            " another ROOMCAST_SECRET_KEY; the user must rotate it",
            turn_id,
        )
        outcome = outbound.Outcome(error=SECRET_UNREADABLE)
    else:
        body = turn_json(view).encode()
        headers = signed_headers(secret, webhook_id(turn_id, claimed.created_at), body, now)
        outcome = outbound.post(
            claimed.webhook_url,
            body,
            headers,
            timeout=settings.webhook_timeout_seconds,
            allowed=settings.webhook_allowed_hosts,
        )
    done = utcnow()
    status, due = next_state(outcome, attempt, claimed.completed_at, done, settings)
    with db.session() as s, s.begin():
        s.execute(
            _RECORD,
            {
                "turn_id": turn_id,
                "attempts_made": attempt,
                "new_status": status,
                "last_status": outcome.status,
                "last_error": outcome.error,
                "next_attempt_at": due,
            },
        )
    WEBHOOK_ATTEMPTS.labels("retry" if status == WEBHOOK_PENDING else status).inc()
    log.info(
        "webhook of turn %s: attempt %s answered %s: %s%s",
        turn_id,
        attempt,
        outcome.status or outcome.error,
        status,
        f", next at {due.isoformat()}" if due else "",
    )
    if due is not None and due - done <= MAX_COUNTDOWN:
        countdown = max(0.0, (due - utcnow()).total_seconds())
        send_deliveries(sender, [(turn_id, attempt)], countdown=countdown)
