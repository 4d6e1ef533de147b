"""Celery's Redis transport, publishing through one Redis client per channel.

kombu's Redis channel builds a new ``redis.Redis`` for every publish, acknowledgement and
event batch, and redis-py rebuilds its table of some 170 response callbacks for each one
(redis/redis-py#3624): about 60 us of CPU each, five or six times per turn between the API's
send and the worker's bookkeeping. The client only wraps the channel's connection pool, so one
per channel serves them all; a new pool (after a disconnect) gets a new client.
"""

from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis


class Channel(redis.Channel):
    _publisher: tuple[object, object] | None = None  # (the pool it wraps, the client)

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        pool = self.pool
        if self._publisher is None or self._publisher[0] is not pool:
            self._publisher = (pool, self._create_client())
        yield self._publisher[1]


class Transport(redis.Transport):
    Channel = Channel


# The value of Celery's broker_transport for redis:// and rediss:// brokers.
REDIS_TRANSPORT = f"{__name__}:Transport"
