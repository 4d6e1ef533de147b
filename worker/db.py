"""The worker's database session factory (see Settings.worker_database_url for precedence)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.db import make_engine, make_sessionmaker
from models.settings import Settings

_settings: Settings | None = None
_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None
_autocommit: Engine | None = None


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings
    reset()


def reset() -> None:
    """Forget the engine; the next session opens fresh connections (used after a fork)."""
    global _engine, _sessionmaker, _autocommit
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = _sessionmaker = _autocommit = None


def engine() -> Engine:
    global _engine, _sessionmaker, _autocommit
    if _engine is None:
        assert _settings is not None, "worker.db.configure() was not called"
        _engine = make_engine(_settings.worker_database_url, pool_size=_settings.db_pool_size)
        _sessionmaker = make_sessionmaker(_engine)
        _autocommit = _engine.execution_options(isolation_level="AUTOCOMMIT")
    return _engine


def session(*, autocommit: bool = False) -> Session:
    """A new session on the worker's database; use as ``with db.session() as s, s.begin():``.

    ``autocommit``: each statement commits by itself, for work whose one write needs no
    transaction around it: no BEGIN and COMMIT, two round trips fewer.
    """
    engine()
    return _sessionmaker(bind=_autocommit) if autocommit else _sessionmaker()
