"""Thin Celery tasks: they take ids, call plain functions, and are safe to run twice."""

from __future__ import annotations

from sqlalchemy import text

from models.tasking import PING

from . import db
from .app import app


@app.task(name=PING, ignore_result=False)
def ping() -> dict:
    """Round trip through the broker and the worker's database."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
    return {"pong": True}
