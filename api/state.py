"""Per-app resources (settings, database, task producer) and the request's database session."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from models.settings import Settings

from .token_cache import TokenCache


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    celery: Celery
    token_cache: TokenCache


def state(app: Flask | None = None) -> AppState:
    return (app or current_app).extensions["roomcast"]


def get_db() -> Session:
    """The request's session, opened on first use and closed at the end of the request.

    Views commit once, at the end of their work; anything not committed is rolled back on close.
    """
    if "db" not in g:
        g.db = state().sessionmaker()
    return g.db


def autocommit_connection() -> Connection:
    """A pooled connection on which each statement commits by itself: for work of one statement.

    Without BEGIN and ROLLBACK it takes two round trips fewer, and psycopg keeps the statements
    it prepared (a ROLLBACK discards them all, so a query would be planned anew every time).
    """
    return state().engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()
