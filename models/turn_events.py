"""Wake-ups for long-polls and event streams: the worker publishes "turn N changed", API
waiters wake at once; and, for streams that asked, the tokens of a reply as they are written.

In embedded mode the worker runs in the API's process, so an in-process registry is enough.
With Redis, changes go through one pub/sub channel (token deltas through a second one) and each
API process runs a single listener thread that wakes its local waiters. A notification may carry
the turn's new status, so a waiter for the end of a turn can let progress go by without reading
the turn, and its session, so a session's stream wakes for any of its turns. Waiters re-read
the database when it matters, and rarely anyway (see SAFETY_REREAD); a notification can only be
lost while the listener is not subscribed, so every waiter is woken when it (re)subscribes: a
lost notification costs little latency, never correctness.

Tokens flow only when a stream asked for them: it raises a flag for its turn or session
(a Redis key with a short TTL it refreshes, or an in-process count), which the worker checks
once per LLM call (``wants_tokens``); turns nobody streams pay that check and nothing else.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any

import redis

log = logging.getLogger(__name__)

# Pub/sub channels are server-wide, whatever the database number: each database (one
# deployment, or one test run, on a shared Redis) gets a channel of its own.
CHANNEL_PREFIX = "roomcast:turn-events:"
DELTAS_PREFIX = "roomcast:turn-deltas:"
TOKENS_KEY_PREFIX = "roomcast:tokens:"
# How long a stream's request for tokens lasts unless refreshed (it refreshes every third).
TOKENS_FLAG_SECONDS = 30
# Waiters read the database again this often (jittered) even without a notification: the only
# gap, a listener between subscriptions, is covered by the wake-up at (re)subscription.
SAFETY_REREAD = (10.0, 15.0)


def safety_reread_delay() -> float:
    """Seconds until a waiter's next unprompted read (jittered, so waiters spread out)."""
    return random.uniform(*SAFETY_REREAD)


def _db_of(redis_url: str) -> str:
    return str(redis.connection.parse_url(redis_url).get("db", 0))


def channel_for(redis_url: str) -> str:
    return CHANNEL_PREFIX + _db_of(redis_url)


def _session_key(session_id: int) -> str:
    # Waiters are keyed by turn id (int) or by this (a session's stream).
    return f"session:{session_id}"


class TurnWatch:
    """The changes of one turn (or session) since the waiter last looked: the statuses they
    announced, and the token deltas published meanwhile if the waiter asked for them."""

    def __init__(self, deltas: bool = False) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._statuses: list[str | None] = []
        self.wants_deltas = deltas
        self._deltas: list[dict[str, Any]] = []
        # The turn it is registered for (a session's stream moves on from turn to turn).
        self.followed: int | None = None

    def notify(self, status: str | None) -> None:
        with self._lock:
            self._statuses.append(status)
            self._changed.set()

    def add_delta(self, delta: dict[str, Any]) -> None:
        with self._lock:
            self._deltas.append(delta)
            self._changed.set()

    def changes(self, timeout: float) -> list[str | None]:
        """Wait up to ``timeout`` seconds for a change; returns the statuses announced since
        the last call (None for a change that announced none), empty if there was no change.

        Taken and reset together, so a change that comes meanwhile is never lost. Deltas also
        end the wait; take them with :meth:`take_deltas`.
        """
        self._changed.wait(timeout)
        with self._lock:
            statuses, self._statuses = self._statuses, []
            if not self._deltas:
                self._changed.clear()
        return statuses

    def take_deltas(self) -> list[dict[str, Any]]:
        with self._lock:
            deltas, self._deltas = self._deltas, []
            if not self._statuses:
                self._changed.clear()
        return deltas


class TurnEvents:
    def __init__(self, redis_url: str | None = None) -> None:
        self._redis_url = redis_url
        self._channel = channel_for(redis_url) if redis_url else None
        self._deltas_channel = DELTAS_PREFIX + _db_of(redis_url) if redis_url else None
        self._tokens_prefix = f"{TOKENS_KEY_PREFIX}{_db_of(redis_url)}:" if redis_url else ""
        self._lock = threading.Lock()
        self._waiters: dict[int | str, set[TurnWatch]] = defaultdict(set)
        # Embedded mode: how many open streams asked for tokens, per turn id or session key.
        self._token_askers: dict[int | str, int] = defaultdict(int)
        self._publisher: redis.Redis | None = None
        self._listener: threading.Thread | None = None

    # -- changes -------------------------------------------------------------------------------

    def publish(
        self, turn_id: int, status: str | None = None, session_id: int | None = None
    ) -> None:
        """Tell waiters that the turn changed, to ``status`` if given (call after the commit);
        with ``session_id``, the session's stream wakes too."""
        if self._redis_url is None:
            self._wake(turn_id, status, session_id)
            return
        # "turn:status", or "turn/session:status": a process of the previous version reads
        # the first as before and skips the second (not a turn id) rather than misreading it.
        turn = f"{turn_id}/{session_id}" if session_id is not None else str(turn_id)
        self._send(self._channel, f"{turn}:{status or ''}", turn_id)

    def _send(self, channel: str, payload: str, turn_id: int) -> None:
        try:
            self._client().publish(channel, payload)
        except redis.RedisError as exc:  # waiters still see the change at their next read
            log.warning("turn %s: notification not published: %s", turn_id, exc)

    def _client(self) -> redis.Redis:
        if self._publisher is None:
            self._publisher = redis.Redis.from_url(
                self._redis_url, socket_connect_timeout=1, socket_timeout=1
            )
        return self._publisher

    @contextmanager
    def watch(
        self, turn_id: int | None = None, *, session_id: int | None = None, deltas: bool = False
    ) -> Iterator[TurnWatch]:
        """The changes of the turn (and/or of any turn of the session) from now on, until the
        block ends; with ``deltas``, the token deltas published for them too.

        Enter it *before* reading the turn: a change committed between that read and the wait
        then still wakes the waiter (waiting after the read loses it, up to the re-read).
        """
        self._ensure_listener()
        watch = TurnWatch(deltas)
        keys: list[int | str] = []
        if turn_id is not None:
            keys.append(turn_id)
        if session_id is not None:
            keys.append(_session_key(session_id))
        for key in keys:
            self._add(key, watch)
        watch.followed = turn_id
        try:
            yield watch
        finally:
            for key in {*keys, watch.followed} - {None}:
                self._discard(key, watch)

    def follow(self, watch: TurnWatch, turn_id: int) -> None:
        """Move a session watch's turn subscription to ``turn_id`` (enter before reading it)."""
        previous = watch.followed
        if previous == turn_id:
            return
        self._add(turn_id, watch)
        if previous is not None:
            self._discard(previous, watch)
        watch.followed = turn_id

    def waiter_count(self) -> int:
        """Registered watches (a watch on a turn and a session counts twice)."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def _add(self, key: int | str, watch: TurnWatch) -> None:
        with self._lock:
            self._waiters[key].add(watch)

    def _discard(self, key: int | str, watch: TurnWatch) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(watch)
                if not waiters:
                    del self._waiters[key]

    def _wake(self, turn_id: int, status: str | None = None, session_id: int | None = None) -> None:
        with self._lock:
            watches = set(self._waiters.get(turn_id, ()))
            if session_id is not None:
                watches.update(self._waiters.get(_session_key(session_id), ()))
        for watch in watches:
            watch.notify(status)

    def _wake_all(self) -> None:
        with self._lock:
            watches = {w for waiters in self._waiters.values() for w in waiters}
        for watch in watches:
            watch.notify(None)

    # -- token deltas ----------------------------------------------------------------------------

    @contextmanager
    def asking_tokens(
        self, turn_id: int | None = None, session_id: int | None = None
    ) -> Iterator[Any]:
        """Ask workers for the tokens of the turn (or of the session's turns) while the block
        lasts; yields a ``refresh()`` to call now and then (every few seconds) in Redis mode."""
        keys: list[int | str] = [k for k in (turn_id,) if k is not None]
        if session_id is not None:
            keys.append(_session_key(session_id))
        if self._redis_url is None:
            with self._lock:
                for key in keys:
                    self._token_askers[key] += 1
            try:
                yield lambda: None
            finally:
                with self._lock:
                    for key in keys:
                        self._token_askers[key] -= 1
                        if self._token_askers[key] <= 0:
                            del self._token_askers[key]
            return
        names = [self._tokens_prefix + str(key) for key in keys]
        refreshed = [0.0]

        def refresh() -> None:
            if time.monotonic() - refreshed[0] < TOKENS_FLAG_SECONDS / 3:
                return
            try:
                pipe = self._client().pipeline(transaction=False)
                for name in names:
                    pipe.set(name, "1", ex=TOKENS_FLAG_SECONDS)
                pipe.execute()
                refreshed[0] = time.monotonic()
            except redis.RedisError as exc:
                log.warning("token streaming not requested: %s", exc)

        refresh()
        # Not deleted at the end: another stream may be asking for the same turn. Workers
        # stop streaming it when the flag expires.
        yield refresh

    def wants_tokens(self, turn_id: int, session_id: int | None = None) -> bool:
        """Whether a stream asked for the tokens of this turn (one cheap check per LLM call)."""
        keys: list[int | str] = [turn_id]
        if session_id is not None:
            keys.append(_session_key(session_id))
        if self._redis_url is None:
            with self._lock:
                return any(self._token_askers.get(key) for key in keys)
        try:
            return bool(self._client().exists(*(self._tokens_prefix + str(k) for k in keys)))
        except redis.RedisError:
            return False

    def publish_delta(self, delta: dict[str, Any], session_id: int | None = None) -> None:
        """Send a token delta (or a ``superseded`` mark) of ``delta["turn_id"]`` to the streams
        that asked; uncommitted, best effort."""
        turn_id = delta["turn_id"]
        if self._redis_url is None:
            self._deliver(delta, session_id)
            return
        payload = json.dumps({**delta, "_session_id": session_id}, separators=(",", ":"))
        self._send(self._deltas_channel, payload, turn_id)

    def _deliver(self, delta: dict[str, Any], session_id: int | None) -> None:
        with self._lock:
            watches = set(self._waiters.get(delta["turn_id"], ()))
            if session_id is not None:
                watches.update(self._waiters.get(_session_key(session_id), ()))
        for watch in watches:
            if watch.wants_deltas:
                watch.add_delta(delta)

    # -- the Redis listener --------------------------------------------------------------------

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
                pubsub = client.pubsub()
                pubsub.subscribe(self._channel, self._deltas_channel)
                backoff = 0.5
                for message in pubsub.listen():
                    self._on_message(message)
            except redis.RedisError as exc:
                log.warning("turn events listener reconnecting after: %s", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"].decode()
        if kind == "subscribe" and channel == self._channel:
            # Subscribed (again): whatever was published while it was not is lost, so every
            # waiter reads once now.
            self._wake_all()
            return
        if kind != "message":
            return
        data = message["data"].decode(errors="replace")
        if channel == self._deltas_channel:
            try:
                delta = json.loads(data)
                session_id = delta.pop("_session_id", None)
                self._deliver(delta, session_id)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
            return
        turn, _, status = data.partition(":")
        turn_id, _, session_id = turn.partition("/")
        with suppress(ValueError):
            self._wake(int(turn_id), status or None, int(session_id) if session_id else None)


@cache
def turn_events(broker_url: str) -> TurnEvents:
    """The process-wide notifier for a broker (shared by the API and an embedded worker)."""
    return TurnEvents(broker_url if broker_url.startswith(("redis://", "rediss://")) else None)
