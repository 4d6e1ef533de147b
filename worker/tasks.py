"""Thin Celery tasks: they take ids, call plain functions, and are safe to run twice."""

from __future__ import annotations

import logging

from sqlalchemy import text

from models.db import is_database_unavailable
from models.lifecycle import REDISPATCH_AFTER
from models.tasking import (
    DELIVER_WEBHOOK,
    EXECUTE_TURN,
    PING,
    REAP_TURNS,
    SWEEP_OUTBOX,
    SWEEP_WEBHOOKS,
)

from . import db, execution, maintenance, webhooks
from .app import app, settings

log = logging.getLogger(__name__)

# A turn whose claim met a database outage is still queued while its message is consumed: it is
# sent again this often, until the outbox's own re-send of stale turns (REDISPATCH_AFTER) would.
# A retry that finds the turn running (the outage came in the middle of a step) claims nothing:
# the turn's lease runs out and the reaper hands it on.
OUTAGE_RETRY_SECONDS = 2


@app.task(name=PING, ignore_result=False)
def ping() -> dict:
    """Round trip through the broker and the worker's database."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
    return {"pong": True}


@app.task(
    name=EXECUTE_TURN,
    bind=True,
    max_retries=int(REDISPATCH_AFTER.total_seconds() // OUTAGE_RETRY_SECONDS),
)
def execute_turn(self, turn_id: int) -> None:
    try:
        execution.execute_turn(turn_id, settings, app)
    except Exception as exc:
        if not _database_outage(exc):
            raise
        log.warning("turn %s: the database is unavailable (%s); retrying", turn_id, exc)
        raise self.retry(exc=exc, countdown=OUTAGE_RETRY_SECONDS) from exc


def _database_outage(exc: BaseException | None) -> bool:
    # Also an error raised while handling one (a commit refused after its connection died).
    while exc is not None:
        if is_database_unavailable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# Maintenance runs every few seconds: with monitoring events, its tasks would push the turns'
# out of Flower's task list within a minute. Their work shows in the logs and the turns.
@app.task(name=SWEEP_OUTBOX, expires=30, send_events=False)
def sweep_outbox() -> None:
    maintenance.sweep_outbox(app, settings.broker_url)


@app.task(name=REAP_TURNS, expires=30, send_events=False)
def reap_turns() -> None:
    maintenance.reap_expired(app, settings.broker_url)


@app.task(name=SWEEP_WEBHOOKS, expires=30, send_events=False)
def sweep_webhooks() -> None:
    maintenance.sweep_webhooks(app)


# One attempt; a failed task (a database outage) leaves the delivery to the webhook sweep.
@app.task(name=DELIVER_WEBHOOK, soft_time_limit=120, time_limit=150)
def deliver_webhook(turn_id: int, attempts_made: int) -> None:
    webhooks.deliver(turn_id, attempts_made, settings, app)
