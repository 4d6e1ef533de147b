"""The connection pool: a connection the server dropped is replaced before it is used."""

import pytest
from sqlalchemy import text

from models import db as db_module
from models.db import make_engine


@pytest.fixture
def postgres_url(settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("server-side connection drops need PostgreSQL")
    return settings.database_url


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


@pytest.mark.parametrize("idle_ping_seconds", [0.0, 3600.0])
def test_a_connection_dropped_while_idle(postgres_url, engine, monkeypatch, idle_ping_seconds):
    monkeypatch.setattr(db_module, "PING_IF_IDLE_SECONDS", idle_ping_seconds)
    pooled = make_engine(postgres_url, pool_size=1)
    try:
        first = _backend_pid(pooled)
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            admin.commit()
        if idle_ping_seconds == 0.0:
            # Idle past the threshold: pinged at checkout, found dead, replaced unseen.
            assert _backend_pid(pooled) != first
        else:
            # Used moments ago: not pinged. The first use fails, and the pool recovers.
            with pytest.raises(Exception, match="terminat|closed|connection"):
                _backend_pid(pooled)
            assert _backend_pid(pooled) != first
    finally:
        pooled.dispose()


def test_only_the_workers_claims_commit_without_waiting_for_the_disk(postgres_url, settings):
    from worker import db as worker_db

    worker_db.configure(settings)
    try:
        with worker_db.claiming_session() as claiming, worker_db.session() as stepping:
            assert claiming.scalar(text("SHOW synchronous_commit")) == "off"
            # Autocommit: each statement is a transaction of its own.
            xact = text("SELECT pg_current_xact_id()::text")
            assert claiming.scalar(xact) != claiming.scalar(xact)
            assert stepping.scalar(text("SHOW synchronous_commit")) == "on"
    finally:
        worker_db.reset()


def test_a_silent_database_host_fails_fast(monkeypatch):
    """A host that accepts and never answers (or drops packets) is an outage within the connect
    timeout, not a request held for minutes."""
    import socket
    import time

    from sqlalchemy import exc

    from models import db as models_db

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(models_db, "CONNECT_TIMEOUT_SECONDS", 1)
    port = silent.getsockname()[1]
    engine = models_db.make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    started = time.monotonic()
    try:
        with pytest.raises(exc.OperationalError):
            engine.connect()
        assert time.monotonic() - started < 5
    finally:
        engine.dispose()
        silent.close()


@pytest.mark.parametrize("model_name", ["ChatSession", "User", "Agent", "Room"])
def test_sqlite_row_locks_write_no_key(model_name, tmp_path):
    """SQLite's row lock is a no-op write that takes the write lock. Writing a key column
    (SET id = id) made SQLite check every table whose foreign keys name the row."""
    from sqlalchemy.orm import Session

    import models
    from models.base import Base

    model = getattr(models, model_name)
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    Base.metadata.create_all(engine)
    statement = db_module._lock_statement(model, "sqlite")
    column = statement.text.split("SET ")[1].split(" =")[0]
    assert not (model.__table__.c[column].primary_key or model.__table__.c[column].foreign_keys)
    with Session(engine) as s, s.begin():
        db_module.lock_row(s, model, 1)  # no such row: still a valid write that locks
        assert s.connection().connection.dbapi_connection.in_transaction
    engine.dispose()
