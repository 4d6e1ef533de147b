"""Engine and session factory. Callers own the session lifecycle (``with Session() as s``)."""

from __future__ import annotations

import sqlite3
import time
from functools import cache
from pathlib import Path

import psycopg
from sqlalchemy import Engine, bindparam, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from .cooperative import GuardedSQLiteConnection, gevent_patched

SQLITE_BUSY_TIMEOUT_MS = 5000
# A pooled connection idle longer than this is pinged before use, and replaced if the server
# dropped it (restart, failover, idle timeout). One used moments ago is not: pinging at every
# checkout (pool_pre_ping) cost a round trip per request and per worker transaction, a fifth of
# a turn's round trips.
PING_IF_IDLE_SECONDS = 1.0


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL keeps readers and the worker's writer out of each other's way (a write-per-task round
    # trip measured 20 ms p50 with the default journal, 2 ms with WAL); FKs are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def normalize_url(url: str) -> URL:
    """Parse a database URL; a bare ``postgresql://`` means the psycopg 3 driver we ship."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def ensure_sqlite_directory(url: URL) -> None:
    """Create the folder of a SQLite file (a fresh checkout has no var/ yet)."""
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str, *, pool_size: int = 10, wait_for_flush: bool = True) -> Engine:
    """An engine for SQLite (file, WAL, FKs on) or PostgreSQL (psycopg 3, pre-pinged pool).

    ``wait_for_flush=False``: on PostgreSQL, a commit returns before its WAL reaches the disk
    (synchronous_commit=off). A crash of the database can then lose the last few such commits,
    never out of order and never one that a later waiting commit came after: only for writes
    whose loss is harmless.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        ensure_sqlite_directory(parsed)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if gevent_patched():
            # SQLite's busy handler would stall every greenlet (models/cooperative.py).
            connect_args["factory"] = GuardedSQLiteConnection
        engine = create_engine(
            parsed,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A database host that drops packets (rather than refusing) must not hold a request or a
    # worker's step for the kernel's minutes-long TCP timeout: fail fast, as an outage.
    connect_args: dict = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    if not wait_for_flush:
        connect_args["options"] = "-c synchronous_commit=off"
    # Up to 2 x pool_size connections, all kept once opened. As overflow (pool_size each way)
    # the second half was closed at every check-in when busy, and a gevent process is busy in
    # bursts: 14 new server processes a second under 256 slow turns, each a fork and a login.
    engine = create_engine(
        parsed, pool_size=2 * pool_size, max_overflow=0, connect_args=connect_args
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling, for connections idle past PING_IF_IDLE_SECONDS only."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IF_IDLE_SECONDS:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool replaces this connection with a new one, and, as SQLAlchemy's own
            # pool_pre_ping does, drops every connection pooled before now: a server that
            # dropped this one (restart, failover) dropped them all, and those used moments ago
            # are not pinged. Otherwise each would still fail one request after the outage.
            raise InvalidatePoolError(f"pooled connection is dead: {exc}") from exc


# PostgreSQL errors that mean "not now" rather than "never", by SQLSTATE class (its first two
# characters): connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources (disk full, too many connections), operator intervention (shutdown,
# starting up, statement timeout), system error; and lock_not_available. psycopg makes them
# OperationalError, but also class 54 (program limit exceeded: an index row too large, say),
# which no retry cures.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_SQLSTATES = frozenset({"55P03"})
# SQLite reports the busy timeout running out as an OperationalError with this text; "no such
# table" and syntax errors are OperationalErrors too, and must stay what they are.
_SQLITE_BUSY_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve now but may in a moment.

    True for a server that is down, unreachable or dropped the connection, a pool with no
    connection to spare, a transient server condition (shutdown, deadlock, too many
    connections...), and SQLite still locked by another writer after the busy timeout. False for
    integrity, programming and data errors: retrying them changes nothing.
    """
    if isinstance(exc, (DisconnectionError, PoolTimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, (OperationalError, InterfaceError)):
            return False
        return exc.orig is None or _is_transient_driver_error(exc.orig)
    return isinstance(exc, (psycopg.Error, sqlite3.Error)) and _is_transient_driver_error(exc)


def _is_transient_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
            _SQLITE_BUSY_MESSAGES
        )
    if isinstance(exc, psycopg.Error):
        if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        sqlstate = exc.sqlstate
        if sqlstate is None:  # raised by the client: refused, closed, timed out
            return True
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    return True  # another driver's OperationalError or InterfaceError


def lock_row(db: Session, model, row_id: int) -> None:
    """Lock one row until the transaction ends, to serialise decisions made on it.

    PostgreSQL takes a row lock (SELECT ... FOR UPDATE). SQLite ignores FOR UPDATE; a no-op write
    makes the driver open the transaction and take SQLite's single write lock now, so whatever
    this transaction reads next stays current until it commits.
    """
    db.execute(_lock_statement(model, db.get_bind().dialect.name), {"id": row_id})


@cache
def _lock_statement(model, dialect: str):
    table = model.__table__
    if dialect == "sqlite":
        # A column that no key involves: writing the primary key (SET id = id) made SQLite check
        # every table whose foreign keys name it, which cost more than the rest of a turn's
        # writes together once the session had a history.
        column = next(
            c.name for c in table.columns if not (c.primary_key or c.foreign_keys or c.unique)
        )
        return text(f"UPDATE {table.name} SET {column} = {column} WHERE id = :id")
    return select(table.c.id).where(table.c.id == bindparam("id")).with_for_update()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: views serialise rows after the commit without reloading them.
    return sessionmaker(engine, expire_on_commit=False)
