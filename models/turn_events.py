"""Wake-ups for long-polls: the worker publishes "turn N changed", API waiters wake at once.

In embedded mode the worker runs in the API's process, so an in-process registry is enough.
With Redis, changes go through one pub/sub channel and each API process runs a single listener
thread that wakes its local waiters. A notification may carry the turn's new status, so a
waiter for the end of a turn can let progress go by without reading the turn. Waiters re-read
the database when it matters (or at their deadline), so a lost notification costs latency,
never correctness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis

log = logging.getLogger(__name__)

# Pub/sub channels are server-wide, whatever the database number: each database (one
# deployment, or one test run, on a shared Redis) gets a channel of its own.
CHANNEL_PREFIX = "roomcast:turn-events:"


def channel_for(redis_url: str) -> str:
    return CHANNEL_PREFIX + str(redis.connection.parse_url(redis_url).get("db", 0))


class TurnWatch:
    """The changes of one turn since the waiter last looked: the statuses they announced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._statuses: list[str | None] = []

    def notify(self, status: str | None) -> None:
        with self._lock:
            self._statuses.append(status)
            self._changed.set()

    def changes(self, timeout: float) -> list[str | None]:
        """Wait up to ``timeout`` seconds for a change; returns the statuses announced since
        the last call (None for a change that announced none), empty if there was no change.

        Taken and reset together, so a change that comes meanwhile is never lost.
        """
        self._changed.wait(timeout)
        with self._lock:
            statuses, self._statuses = self._statuses, []
            self._changed.clear()
        return statuses


class TurnEvents:
    def __init__(self, redis_url: str | None = None) -> None:
        self._redis_url = redis_url
        self._channel = channel_for(redis_url) if redis_url else None
        self._lock = threading.Lock()
        self._waiters: dict[int, set[TurnWatch]] = defaultdict(set)
        self._publisher: redis.Redis | None = None
        self._listener: threading.Thread | None = None

    def publish(self, turn_id: int, status: str | None = None) -> None:
        """Tell waiters that the turn changed, to ``status`` if given (call after the commit)."""
        if self._redis_url is None:
            self._wake(turn_id, status)
            return
        try:
            if self._publisher is None:
                self._publisher = redis.Redis.from_url(
                    self._redis_url, socket_connect_timeout=1, socket_timeout=1
                )
            payload = f"{turn_id}:{status}" if status else str(turn_id)
            self._publisher.publish(self._channel, payload)
        except redis.RedisError as exc:  # pollers still see the change at their deadline
            log.warning("turn %s: change notification not published: %s", turn_id, exc)

    @contextmanager
    def watch(self, turn_id: int) -> Iterator[TurnWatch]:
        """The changes of the turn from now on, until the block ends.

        Enter it *before* reading the turn: a change committed between that read and the wait
        then still wakes the waiter (waiting after the read loses it, up to the re-read).
        """
        self._ensure_listener()
        watch = TurnWatch()
        with self._lock:
            self._waiters[turn_id].add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                waiters = self._waiters.get(turn_id)
                if waiters is not None:
                    waiters.discard(watch)
                    if not waiters:
                        del self._waiters[turn_id]

    def _wake(self, turn_id: int, status: str | None = None) -> None:
        with self._lock:
            for watch in self._waiters.get(turn_id, ()):
                watch.notify(status)

    def _ensure_listener(self) -> None:
        if self._redis_url is None or self._listener is not None:
            return
        with self._lock:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="turn-events-listener", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                backoff = 0.5
                for message in pubsub.listen():
                    turn_id, _, status = message["data"].decode(errors="replace").partition(":")
                    try:
                        self._wake(int(turn_id), status or None)
                    except ValueError:
                        continue
            except redis.RedisError as exc:
                log.warning("turn events listener reconnecting after: %s", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)


@cache
def turn_events(broker_url: str) -> TurnEvents:
    """The process-wide notifier for a broker (shared by the API and an embedded worker)."""
    return TurnEvents(broker_url if broker_url.startswith(("redis://", "rediss://")) else None)
