"""Keeping the leases of the turns this process runs alive while their steps run outside any
transaction (an LLM call of seconds or minutes, a tool round).

The lease can then be short (ROOMCAST_TURN_LEASE_SECONDS, 20 s by default): a worker that dies
stops renewing, and the reaper hands its turn to another worker within a lease and a reaper
interval, whatever the length of the call it died in. One daemon thread per process renews
every held turn each third of a lease, fenced on the attempt like every write
(models.lifecycle.renew_leases): a turn cancelled or taken over is let go. All of them in one
statement: a worker holds hundreds of turns (one transaction each was a burst of hundreds of
commits every few seconds).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from models import lifecycle

from . import db

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[int, timedelta]] = {}  # turn id -> (attempt, lease)
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        # The lease the thread's current wait was computed with (None: not waiting).
        self._waiting_for: timedelta | None = None

    @contextmanager
    def holding(self, turn_id: int, attempt: int, lease: timedelta) -> Iterator[None]:
        """Renew the turn's lease until the block ends."""
        with self._lock:
            self._held[turn_id] = (attempt, lease)
            # Under gevent, Thread.is_alive() and Condition.notify() yield while this lock is
            # held (each makes a non-blocking acquire that fails, and gevent sleeps after one):
            # called for every turn, they queued each step's start and end behind the lock for
            # up to a second at 256 turns. So the thread is woken only for a shorter lease than
            # the one its wait is for, and it clears its own reference when it ends.
            if self._waiting_for is not None and lease < self._waiting_for:
                self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="roomcast-leases", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(turn_id, (None,))[0] == attempt:
                    del self._held[turn_id]

    def renew_all(self) -> None:
        """Renew every held lease once (the thread's beat; tests call it directly)."""
        by_lease: dict[timedelta, set[tuple[int, int]]] = {}
        with self._lock:
            for turn_id, (attempt, lease) in self._held.items():
                by_lease.setdefault(lease, set()).add((turn_id, attempt))
        for lease, owned in by_lease.items():
            try:
                with db.session() as s, s.begin():
                    mine = lifecycle.renew_leases(s, owned, lease=lease)
            except Exception as exc:  # a database blip: the next beat tries again
                log.warning("%s leases not renewed (%s)", len(owned), type(exc).__name__)
                continue
            with self._lock:  # cancelled, finished or taken over: nothing more to keep
                for turn_id, attempt in owned - mine:
                    if self._held.get(turn_id, (None,))[0] == attempt:
                        del self._held[turn_id]

    def _run(self) -> None:
        try:
            self._beat()
        except Exception:
            log.exception("lease keeper stopped by an error; the next turn held starts another")
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _beat(self) -> None:
        last_beat = time.monotonic()
        while True:
            with self._lock:
                while True:
                    if not self._held:
                        self._thread = None
                        return
                    lease = min(lease for _, lease in self._held.values())
                    wait = last_beat + lease.total_seconds() / 3 - time.monotonic()
                    if wait <= 0:
                        break
                    self._waiting_for = lease
                    try:
                        self._wake.wait(wait)  # woken early when a turn with a shorter lease comes
                    finally:
                        self._waiting_for = None
            last_beat = time.monotonic()
            self.renew_all()


keeper = LeaseKeeper()


def _after_fork_in_child() -> None:
    global keeper
    keeper = LeaseKeeper()  # the parent's thread and turns are not this process's


os.register_at_fork(after_in_child=_after_fork_in_child)
