"""Thin Celery tasks: they take ids, call plain functions, and are safe to run twice."""

from __future__ import annotations

from sqlalchemy import text

from models.tasking import EXECUTE_TURN, PING, REAP_TURNS, SWEEP_OUTBOX

from . import db, execution, maintenance
from .app import app, settings


@app.task(name=PING, ignore_result=False)
def ping() -> dict:
    """Round trip through the broker and the worker's database."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
    return {"pong": True}


@app.task(name=EXECUTE_TURN)
def execute_turn(turn_id: int) -> None:
    execution.execute_turn(turn_id, settings, app)


@app.task(name=SWEEP_OUTBOX, expires=30)
def sweep_outbox() -> None:
    maintenance.sweep_outbox(app, settings.broker_url)


@app.task(name=REAP_TURNS, expires=30)
def reap_turns() -> None:
    maintenance.reap_expired(app, settings.broker_url)
