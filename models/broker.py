"""Celery's Redis transport, publishing through one Redis client per channel, whose connection
pool makes callers wait for a connection rather than fail.

kombu's Redis channel builds a new ``redis.Redis`` for every publish, acknowledgement and
event batch, and redis-py rebuilds its table of some 170 response callbacks for each one
(redis/redis-py#3624): about 60 us of CPU each, five or six times per turn between the API's
send and the worker's bookkeeping. The client only wraps the channel's connection pool, so one
per channel serves them all; a new pool (after a disconnect) gets a new client.

In a gevent process, the worker acknowledges from hundreds of greenlets at once, and the API
sends from as many requests. redis-py's plain pool fails with "Too many connections" past its limit
(the transport's ``max_connections``, 10): measured, 200 turns ending together in one worker
failed their acks and made the consumer drop its broker connection. The blocking pool queues
them for a connection (a greenlet waits by yielding), each for a Redis round trip.
"""

from __future__ import annotations

from contextlib import contextmanager

import redis as redis_py
from kombu.transport import redis

from .cooperative import gevent_patched

# How long a caller waits for a pooled connection before the error the plain pool gives at once.
POOL_WAIT_SECONDS = 20


class Channel(redis.Channel):
    _publisher: tuple[object, object] | None = None  # (the pool it wraps, the client)

    def _get_pool(self, asynchronous=False):
        if asynchronous or not gevent_patched():
            # Only gevent processes have hundreds of callers at once. Elsewhere kombu's own pool
            # (with a blocking one, Flower's inspect requests, made from several threads that
            # each hold a connection while they wait for replies, timed out).
            return super()._get_pool(asynchronous=asynchronous)
        params = self._connparams(asynchronous=False)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return redis_py.BlockingConnectionPool(timeout=POOL_WAIT_SECONDS, **params)

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
