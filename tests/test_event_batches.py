"""Task events from a worker without an event loop (the shipped gevent pool; the suite's threads
pool on the in-memory broker) go out in batches, and every event still arrives
(worker/event_batches.py). tests/test_flower.py shows Flower reading them."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from contextlib import contextmanager, suppress

import pytest
from kombu import Connection, Consumer, Queue

from tests.conftest import BROKER_URL
from tests.processes import own_redis_url, start, stop, wait_for
from worker.event_batches import FLUSH_INTERVAL

EVENT_TYPES = ("task-received", "task-started", "task-succeeded")


@contextmanager
def captured_events(app, broker_url: str):
    """Every message on the events exchange, as a monitor (Flower) reads it, while inside."""
    bodies: list = []
    stop_reading, ready = threading.Event(), threading.Event()
    exchange = app.events.Dispatcher(enabled=False).exchange

    def read() -> None:
        queue = Queue(f"test-events-{uuid.uuid4().hex[:8]}", exchange, "#", auto_delete=True)
        conn = Connection(broker_url) if broker_url else app.connection_for_read()
        callbacks = [lambda body, _msg: bodies.append(body)]
        with conn, Consumer(conn, [queue], callbacks=callbacks):
            ready.set()
            while not stop_reading.is_set():
                with suppress(TimeoutError, OSError):  # OSError: a socket's own timeout
                    conn.drain_events(timeout=0.2)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(10)
    try:
        yield bodies
    finally:
        stop_reading.set()
        reader.join(5)


def assert_all_events_batched(bodies: list, task_ids: set[str]) -> None:
    """Each task's three events once each, within the flush interval, some of them in lists."""
    expected = {(i, t) for i in task_ids for t in EVENT_TYPES}
    deadline = time.monotonic() + FLUSH_INTERVAL + 10
    while True:
        events = [e for body in list(bodies) for e in (body if isinstance(body, list) else [body])]
        mine = [(e["uuid"], e["type"]) for e in events if e.get("uuid") in task_ids]
        if expected <= set(mine) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert expected <= set(mine), sorted(set(mine))
    assert len(mine) == len(set(mine))  # none twice
    lists = [body for body in bodies if isinstance(body, list)]
    assert lists, "no batch: each event went out on its own"


@pytest.mark.skipif(not BROKER_URL.startswith("memory"), reason="the in-memory broker's worker")
def test_the_suite_worker_batches_its_task_events(celery_worker):
    from worker import app as celery_app

    consumer = celery_worker.consumer
    assert consumer.hub is None  # no event loop: Celery alone would send each event by itself
    assert "task" in consumer.event_dispatcher.buffer_group
    with captured_events(celery_app, "") as bodies:
        ids = {celery_app.send_task("roomcast.ping", queue="turns").id for _ in range(5)}
        assert_all_events_batched(bodies, ids)


@pytest.mark.skipif(not BROKER_URL.startswith("redis"), reason="a shipped worker needs Redis")
def test_the_shipped_gevent_worker_batches_its_task_events(settings, tmp_path):
    from dataclasses import replace

    from api.broker import make_celery_client

    broker_url = own_redis_url(BROKER_URL)
    env = {**os.environ, "DATABASE_URL": settings.database_url, "CELERY_BROKER_URL": broker_url}
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-P", "gevent"]
    argv += ["--concurrency", "20", "-Q", "turns", "--without-mingle", "--without-gossip"]
    log = tmp_path / "worker.log"
    worker = start(argv, log, env)
    producer = make_celery_client(replace(settings, broker_url=broker_url))
    try:
        wait_for(lambda: producer.control.ping(timeout=0.5), "the worker answers", [worker], [log])
        with captured_events(producer, broker_url) as bodies:
            ids = {producer.send_task("roomcast.ping", queue="turns").id for _ in range(30)}
            assert_all_events_batched(bodies, ids)
            # 90 events, at most 24 a list: a handful of messages, not one per event.
            assert len([b for b in bodies if isinstance(b, list)]) <= 10
    finally:
        stop(worker)
