"""Flower as operators run it (``make flower``): a real worker and a real Flower on the Redis
broker, a turn run through the API, and the turn's task found through Flower's REST API.

The worker and Flower get a Redis database of their own, so no other worker of the suite takes
the turn.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import httpx
import pytest

from tests.conftest import BROKER_URL
from tests.helpers import post_turn, start_session, wait_done
from tests.processes import free_port, own_redis_url, start, stop
from worker.event_batches import FLUSH_INTERVAL

pytestmark = pytest.mark.skipif(
    not BROKER_URL.startswith("redis"), reason="Flower watches a shared broker (Redis)"
)

CREDENTIALS = ("ops", "flower-test-password")


@pytest.fixture(scope="module")
def flower_stack(settings, tmp_path_factory):
    broker_url = own_redis_url(BROKER_URL)
    logs = tmp_path_factory.mktemp("flower")
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": broker_url,
        "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS),
    }
    port = free_port()
    celery = [sys.executable, "-m", "celery", "-A", "worker"]
    procs = [
        start(
            # The worker as shipped (docker-compose.yml): gevent, its task events in batches.
            [*celery, "worker", "-Q", "turns,maintenance", "-P", "gevent", "--without-mingle"],
            logs / "worker.log",
            env,
        ),
        start(
            [*celery, "flower", "--address=127.0.0.1", f"--port={port}"], logs / "flower.log", env
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # refresh: ask the workers now; Flower's own first ask may have come before the
                # worker was up, and it keeps that (empty) answer.
                workers = httpx.get(
                    f"{base}/api/workers", params={"refresh": 1}, auth=CREDENTIALS, timeout=10
                )
                if workers.status_code == 200 and workers.json():
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    "Flower or its worker did not come up:\n"
                    + (logs / "flower.log").read_text()[-2000:]
                    + (logs / "worker.log").read_text()[-2000:]
                )
            time.sleep(0.3)
        yield base, broker_url
    finally:
        for proc in procs:
            stop(proc)


def test_flower_shows_the_turn_task_by_name_turn_id_and_state(
    flower_stack, settings, make_user, make_agent
):
    from api import create_app

    base, broker_url = flower_stack
    app = create_app(replace(settings, broker_url=broker_url), {"TESTING": True})
    client, user = app.test_client(), make_user()
    session = start_session(client, user, agent=make_agent(user))
    turn = post_turn(client, user, session["id"], "hello flower").json
    assert wait_done(client, user, turn["id"])["status"] == "completed"

    deadline = time.monotonic() + 15
    while True:
        tasks = httpx.get(
            f"{base}/api/tasks",
            params={"taskname": "roomcast.turns.execute", "limit": 100},
            auth=CREDENTIALS,
            timeout=5,
        ).json()
        mine = [t for t in tasks.values() if t["args"] in (f"[{turn['id']}]", f"({turn['id']},)")]
        if mine and mine[0]["state"] == "SUCCESS":
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.3)
    assert mine[0]["name"] == "roomcast.turns.execute"


def test_flower_refuses_requests_without_the_credentials(flower_stack):
    base, _ = flower_stack
    for path in ("/", "/api/workers", "/api/tasks"):
        assert httpx.get(f"{base}{path}", timeout=5).status_code == 401
        assert httpx.get(f"{base}{path}", auth=("ops", "wrong"), timeout=5).status_code == 401


def test_maintenance_tasks_stay_out_of_the_task_list(flower_stack, settings):
    import redis

    from api.broker import make_celery_client
    from models.tasking import MAINTENANCE_QUEUE, REAP_TURNS, SWEEP_OUTBOX

    base, broker_url = flower_stack
    producer = make_celery_client(replace(settings, broker_url=broker_url))
    for name in (SWEEP_OUTBOX, REAP_TURNS) * 3:
        producer.send_task(name, queue=MAINTENANCE_QUEUE)
    queue = redis.Redis.from_url(broker_url)
    deadline = time.monotonic() + 15
    while queue.llen(MAINTENANCE_QUEUE):  # the worker took them all
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(FLUSH_INTERVAL + 1)  # events would have reached Flower by now
    tasks = httpx.get(f"{base}/api/tasks", auth=CREDENTIALS, timeout=5).json()
    assert not [t for t in tasks.values() if t["name"].startswith("roomcast.maintenance.")]


def test_the_healthcheck_answers_without_the_login(flower_stack):
    # docker-compose.yml's healthcheck for Flower asks this page: the one it serves to anyone.
    base, _ = flower_stack
    response = httpx.get(f"{base}/healthcheck", timeout=5)
    assert (response.status_code, response.text) == (200, "OK")
