"""Running under gevent: what the API and the worker need from their drivers there.

The shipped processes are gevent processes (``gunicorn -k gevent``, ``celery worker -P
gevent``, ``serve.py``): one thread runs hundreds of greenlets, each waiting on sockets (an LLM
call, a long-poll) without holding a thread. That holds only while nothing blocks the thread:

- **psycopg** waits for the server cooperatively only when ``select`` was monkey-patched before
  psycopg was first imported (it picks its wait function at import: ``wait_c`` blocks the whole
  process; under gevent it picks ``wait_poll``). :func:`require_cooperative_psycopg` checks it.
- **SQLite** waits for another writer's lock in C (its busy handler sleeps, holding the thread).
  If a greenlet holding SQLite's write lock yields (a socket, a contended lock, a pool
  checkout...) to a greenlet that then writes, that greenlet sleeps in the busy handler and the
  holder cannot run to release the lock: the whole process stalls for the busy timeout and the
  write fails. :class:`GuardedSQLiteConnection` serialises the process's SQLite write
  transactions on a gevent lock, taken at a transaction's first write and released at its end,
  so a second writer waits by yielding, and the holder runs on to its commit.
- **httpx's connection pools** (the OpenAI client's) check every idle kept-alive connection with
  a ``poll()`` of timeout 0 each time a request starts or ends. Under gevent that ``poll`` is
  gevent's, which goes through the hub: with a hundred idle connections to an LLM server, a
  worker spent a third of its CPU there. :func:`probe_sockets_directly` gives those probes the
  operating system's ``poll``, which cannot block with a timeout of 0.
"""

from __future__ import annotations

import importlib
import select
import sqlite3
import sys

COOPERATIVE_PSYCOPG_WAITS = ("wait_poll", "wait_select", "wait_selector", "wait_epoll")


def gevent_patched() -> bool:
    """Whether gevent monkey-patched this process (sockets and threads are then greenlets')."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def psycopg_wait() -> str:
    """The name of the function psycopg waits for the server with in this process."""
    import psycopg.waiting

    return psycopg.waiting.wait.__name__


def require_cooperative_psycopg() -> str:
    """In a gevent process, make sure psycopg waits cooperatively; returns its wait function.

    Raises RuntimeError when psycopg was imported before gevent patched ``select``: every query
    would then block all of the process's greenlets, turns and requests, for its duration.
    """
    wait = psycopg_wait()
    if gevent_patched() and wait not in COOPERATIVE_PSYCOPG_WAITS:
        raise RuntimeError(
            f"psycopg waits with {wait}, which blocks every greenlet of this gevent process:"
            " it was imported before gevent patched select (patch first: gunicorn -k gevent,"
            " celery worker -P gevent, or gevent.monkey.patch_all() before any import)"
        )
    return wait


def probe_sockets_directly() -> None:
    """In a gevent process, let httpcore's readability probes call the OS's own ``poll``."""
    if not gevent_patched():
        return
    from types import SimpleNamespace

    from gevent.monkey import get_original

    original = SimpleNamespace(
        **dict(zip(("poll", "select"), get_original("select", ["poll", "select"]), strict=True)),
        POLLIN=select.POLLIN,
    )
    for name in ("httpcore2._utils", "httpcore._utils"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.select = original


# Statements that do not write. Any other statement may, so it takes the write lock (released
# right after it when it opened no transaction: a statement in autocommit mode).
_READS = ("SELECT", "PRAGMA", "EXPLAIN")
_write_lock = None


def _lock():
    global _write_lock
    if _write_lock is None:
        from gevent.lock import Semaphore

        _write_lock = Semaphore(1)
    return _write_lock


class _GuardedCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=(), /):
        self.connection._before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection._after()

    def executemany(self, sql, seq_of_parameters, /):
        self.connection._before(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self.connection._after()


class GuardedSQLiteConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions hold the process's SQLite write lock.

    Pass as ``sqlite3.connect(factory=...)``, only in a gevent-patched process. A writer that
    waits for the lock longer than ``timeout`` (the busy timeout) gets the same error as SQLite's
    own busy timeout ("database is locked"), so callers see no new failure mode.
    """

    _holds_write_lock = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock_timeout = kwargs.get("timeout", 5.0)

    def cursor(self, factory=_GuardedCursor):
        return super().cursor(factory)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._after()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._after()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def _before(self, sql: str) -> None:
        if self._holds_write_lock or sql.lstrip()[:7].upper().startswith(_READS):
            return
        if not _lock().acquire(timeout=self._write_lock_timeout):
            raise sqlite3.OperationalError(
                "database is locked (another greenlet of this process held the write lock"
                f" for {self._write_lock_timeout:g} s)"
            )
        self._holds_write_lock = True

    def _after(self) -> None:
        if not self._holds_write_lock:
            return
        try:
            in_transaction = self.in_transaction
        except sqlite3.ProgrammingError:  # closed
            in_transaction = False
        if not in_transaction:
            self._release()

    def _release(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            _lock().release()
