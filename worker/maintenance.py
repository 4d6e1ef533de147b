"""Periodic maintenance: the outbox sweep and the reaper. Both are idempotent and cheap.

- Outbox sweep: a queued turn whose task never reached the broker (it was down when the turn
  was posted) or reached it long ago without being claimed (the broker lost it) is sent again;
  every queued turn is, at once, when the broker's Redis lost its data (see BROKER_MARK).
- Webhook sweep: a turn's webhook delivery that is due and was not sent (the process that ended
  the turn died after its commit, the broker was down, a retry due later than a countdown
  covers) is sent; the delivery's claim makes a copy sent twice attempt once.
- Reaper: a running turn whose lease expired (its worker died) is queued again and re-sent, or
  failed with ``stop_reason: worker_lost`` once it has been claimed MAX_ATTEMPTS times; a turn
  no worker claimed within QUEUE_TIMEOUT fails with ``stop_reason: not_started``.

Bound: a turn reaches a terminal status within MAX_ATTEMPTS x (lease + reaper interval) of its
first claim, plus the task time limit of its last attempt.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache

import redis
from sqlalchemy import bindparam, literal, or_, select, update

from models import Turn, lifecycle, metrics, utcnow
from models.base import UTCDateTime
from models.lifecycle import MAX_ATTEMPTS, QUEUE_TIMEOUT, REDISPATCH_AFTER
from models.tasking import TURNS_QUEUE
from models.turn_events import turn_events
from models.turns import FAILED, QUEUED, RUNNING, WEBHOOK_PENDING
from models.webhook_dispatch import TaskSender, send_deliveries

from . import db

log = logging.getLogger(__name__)

BATCH = 500


# A key the sweep keeps in the broker's Redis database. Gone, it says the broker lost its data
# (restarted without persistence, a failover to a replica that had not caught up) and with it
# the messages of the queued turns: all of them are sent again at once, instead of after
# REDISPATCH_AFTER. A duplicate delivery claims nothing, so sending one too many is harmless.
BROKER_MARK = "roomcast:broker-mark"


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


# A queued turn sent this long ago, while the broker's turns queue is empty, is not waiting in
# it: its message was taken by a worker that died before claiming it (a prefetched message,
# given back only after the visibility timeout) or is held by a worker busy with a long call.
# Sent again, an idle worker claims it; the other copy then claims nothing. With a backlog in
# the queue the turn may still be in line, and waits for REDISPATCH_AFTER as before.
STALE_WHEN_IDLE = timedelta(seconds=30)


def broker_lost_data(broker_url: str | None) -> bool:
    """Whether the broker's data is new since the last sweep (then marked as seen)."""
    if not broker_url or not broker_url.startswith("redis"):
        return False  # the embedded broker lives and dies with the process that sends
    return bool(_redis(broker_url).set(BROKER_MARK, "1", nx=True))


def broker_queue_empty(broker_url: str | None) -> bool:
    """Whether the broker holds no turn message waiting for a worker (Redis: the queue's list)."""
    if not broker_url or not broker_url.startswith("redis"):
        return False  # in-process: nothing can hold a message but the running worker
    return _redis(broker_url).llen(TURNS_QUEUE) == 0


def sweep_outbox(sender: lifecycle.TaskSender, broker_url: str | None = None) -> list[int]:
    """Send again the queued turns the broker does not (or no longer) hold; returns their ids."""
    now = utcnow()
    lost = broker_lost_data(broker_url)
    stale = now - (STALE_WHEN_IDLE if broker_queue_empty(broker_url) else REDISPATCH_AFTER)
    with db.session() as s, s.begin():
        ids = list(
            s.scalars(
                select(Turn.id)
                .where(
                    Turn.status == QUEUED,
                    or_(
                        literal(lost),
                        Turn.dispatched_at.is_(None),
                        Turn.dispatched_at < stale,
                    ),
                )
                .order_by(Turn.id)
                .limit(BATCH)
            )
        )
        if ids:
            s.execute(
                update(Turn)
                .where(Turn.id.in_(ids), Turn.status == QUEUED)
                .values(dispatched_at=now)
            )
    if ids:
        why = " (the broker lost its data)" if lost else ""
        log.info("outbox: re-sending %d turn(s)%s: %s", len(ids), why, ids[:20])
        lifecycle.dispatch(sender, db.session, ids)
    return ids


def reap_expired(sender: lifecycle.TaskSender, broker_url: str) -> tuple[list[int], list[int]]:
    """Requeue or fail running turns whose lease expired, and fail turns queued past
    QUEUE_TIMEOUT; returns (requeued, failed) ids."""
    now = utcnow()
    requeued: list[int] = []
    failed: list[int] = []
    promoted: list[int] = []
    reasons: list[str] = []  # the stop_reason of each failed turn
    with db.session() as s, s.begin():
        expired = s.execute(
            select(Turn.id, Turn.attempt)
            .where(Turn.status == RUNNING, Turn.lease_expires_at < now)
            .order_by(Turn.id)
            .limit(BATCH)
        ).all()
        for turn_id, attempt in expired:
            if attempt >= MAX_ATTEMPTS:
                ended, next_id = lifecycle.finish(
                    s,
                    turn_id,
                    attempt,
                    FAILED,
                    stop_reason="worker_lost",
                    error_code="worker_lost",
                    error_message=f"The worker running this turn stopped responding "
                    f"{attempt} times; the turn was given up.",
                )
                if ended:
                    failed.append(turn_id)
                    reasons.append("worker_lost")
                    if next_id is not None:
                        promoted.append(next_id)
                continue
            result = s.execute(
                update(Turn)
                .where(
                    Turn.id == turn_id,
                    Turn.status == RUNNING,
                    Turn.attempt == attempt,
                    Turn.lease_expires_at < now,
                )
                .values(status=QUEUED, lease_expires_at=None, dispatched_at=now, updated_at=now)
            )
            if result.rowcount:
                requeued.append(turn_id)
        unstarted = s.scalars(
            select(Turn.id)
            .where(Turn.status == QUEUED, Turn.updated_at < now - QUEUE_TIMEOUT)
            .order_by(Turn.id)
            .limit(BATCH)
        ).all()
        for turn_id in unstarted:
            ended, next_id = lifecycle.fail_unstarted(s, turn_id, now)
            if ended:
                failed.append(turn_id)
                reasons.append("not_started")
                if next_id is not None:
                    promoted.append(next_id)
    for reason in reasons:
        metrics.TURNS_ENDED.labels(FAILED, reason).inc()
    if requeued or promoted:
        lifecycle.dispatch(sender, db.session, requeued + promoted)
    if requeued or failed:
        log.warning("reaper: requeued %s, failed %s", requeued, failed)
        events = turn_events(broker_url)
        for turn_id in requeued:
            events.publish(turn_id, QUEUED)
        for turn_id in failed:
            events.publish(turn_id, FAILED)
    return requeued, failed


# A delivery due this long ago was not sent on time (its send after the turn's end, or its
# countdown): the sweep sends it. Sooner, it is most likely on its way.
WEBHOOK_SWEEP_GRACE = timedelta(seconds=10)
# A delivery the sweep sent is sent again if no worker took it after this (the broker lost it).
WEBHOOK_RESEND_AFTER = timedelta(minutes=5)
_t = Turn.__table__
_DUE_WEBHOOK = (
    _t.c.webhook_status == WEBHOOK_PENDING,
    _t.c.webhook_next_attempt_at <= bindparam("due_before", type_=UTCDateTime()),
)
_TAKE_DUE_WEBHOOKS = (
    update(_t)
    .where(
        _t.c.id.in_(
            select(_t.c.id)
            .where(*_DUE_WEBHOOK)
            .order_by(_t.c.webhook_next_attempt_at)
            .limit(BATCH)
            .scalar_subquery()
        ),
        *_DUE_WEBHOOK,
    )
    .values(webhook_next_attempt_at=bindparam("resend_at", type_=UTCDateTime()))
    .returning(_t.c.id, _t.c.webhook_attempts)
)


def sweep_webhooks(sender: TaskSender, grace: timedelta = WEBHOOK_SWEEP_GRACE) -> list[int]:
    """Send the webhook deliveries due ``grace`` ago or more; returns their turns' ids."""
    now = utcnow()
    with db.session() as s, s.begin():
        due = s.execute(
            _TAKE_DUE_WEBHOOKS,
            {"due_before": now - grace, "resend_at": now + WEBHOOK_RESEND_AFTER},
        ).all()
    if due:
        log.info("webhooks: sending %d due deliveries: %s", len(due), [t for t, _ in due][:20])
        send_deliveries(sender, [tuple(row) for row in due])
    return [turn_id for turn_id, _ in due]
