"""Run a Celery worker inside the current process, on the in-memory (embedded) broker.

Used by the single-process dev server and the test suite: the API's producer and this worker
share kombu's in-process memory transport, so turns go through Celery without Redis. In a
gevent-patched process (serve.py) the worker uses Celery's gevent pool: each turn is a greenlet
and ``concurrency`` turns overlap their LLM calls, as in ``celery worker -P gevent``; otherwise
(the test suite) a pool of threads.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.worker import WorkController

from models.cooperative import gevent_patched

START_TIMEOUT = 30
log = logging.getLogger(__name__)


class EmbeddedWorker(WorkController):
    """A worker that can be waited on until it consumes its queues."""

    def __init__(self, *args, **kwargs) -> None:
        self.started = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer) -> None:
        self.started.set()


def start_embedded_worker(
    app: Celery, *, concurrency: int = 4, loglevel: str = "WARNING"
) -> EmbeddedWorker:
    """Start the worker in a daemon thread (a greenlet under gevent); returns once it listens
    on its queues."""
    # Pool threads resolve tasks through the default app, which must be this one.
    app.set_default()
    worker = EmbeddedWorker(
        app=app,
        pool_cls="gevent" if gevent_patched() else "threads",
        concurrency=concurrency,
        loglevel=loglevel,
        # Cluster chatter is pointless inside one process and only slows start-up.
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
    )
    threading.Thread(target=worker.start, name="embedded-celery-worker", daemon=True).start()
    if not worker.started.wait(START_TIMEOUT):
        raise RuntimeError(f"the embedded Celery worker did not start within {START_TIMEOUT} s")
    return worker


def stop_embedded_worker(worker: EmbeddedWorker) -> None:
    worker.stop(in_sighandler=False, exitcode=0)


def start_maintenance_timer(app: Celery, broker_url: str, interval: float = 1.0) -> threading.Event:
    """Run the outbox sweep, the reaper and the webhook sweep every ``interval`` seconds
    (embedded mode has no beat).

    Returns an event that stops the timer when set.
    """
    from . import maintenance

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                maintenance.sweep_outbox(app, broker_url)
                maintenance.reap_expired(app, broker_url)
                maintenance.sweep_webhooks(app)
            except Exception:  # keep the timer alive; the next run retries
                log.exception("embedded maintenance run failed")

    threading.Thread(target=loop, name="embedded-maintenance", daemon=True).start()
    return stop
