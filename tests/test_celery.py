"""The round trip API producer -> broker -> worker -> database, on the test back end."""

import uuid

import pytest

from models.tasking import PING
from tests.conftest import BROKER_URL
from tests.helpers import celery_worker_process


def _ping(client_app, **options):
    result = client_app.send_task(PING, ignore_result=False, **options)
    return result.get(timeout=20, interval=0.01, disable_sync_subtasks=False)


def test_api_producer_reaches_the_worker(app, celery_worker):
    from api.state import state

    assert _ping(state(app).celery) == {"pong": True}


@pytest.mark.skipif(
    not BROKER_URL.startswith("redis"), reason="a separate process needs a real broker"
)
def test_celery_cli_worker_process(app, tmp_path):
    """``celery -A worker worker`` is a working entry point (as in production)."""
    from api.state import state

    queue = f"ping-{uuid.uuid4().hex[:8]}"
    proc = celery_worker_process(queue, tmp_path / "worker.log")
    try:
        assert _ping(state(app).celery, queue=queue) == {"pong": True}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_delivery_settings_make_turns_at_least_once_and_safe():
    from models.tasking import (
        DELIVER_WEBHOOK,
        EXECUTE_TURN,
        REAP_TURNS,
        SWEEP_OUTBOX,
        SWEEP_WEBHOOKS,
        TASK_TIME_LIMIT,
    )
    from worker import app as celery_app

    conf = celery_app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit == TASK_TIME_LIMIT
    assert conf.worker_send_task_events and not conf.task_send_sent_event
    if not BROKER_URL.startswith("memory"):
        assert conf.broker_transport_options["visibility_timeout"] > TASK_TIME_LIMIT
    schedule = {entry["task"] for entry in conf.beat_schedule.values()}
    assert schedule == {SWEEP_OUTBOX, REAP_TURNS, SWEEP_WEBHOOKS}
    tasks = {EXECUTE_TURN, SWEEP_OUTBOX, REAP_TURNS, SWEEP_WEBHOOKS, DELIVER_WEBHOOK}
    assert tasks <= set(celery_app.tasks)
    routes = conf.task_routes
    assert routes["roomcast.maintenance.*"]["queue"] == "maintenance"
    assert routes["roomcast.webhooks.*"]["queue"] == "webhooks"


def test_redis_brokers_publish_through_one_client_per_channel(settings):
    from dataclasses import replace

    from kombu import Connection

    from models.broker import REDIS_TRANSPORT, Transport
    from models.tasking import celery_config

    assert "broker_transport" not in celery_config(replace(settings, broker_url="memory://"))
    redis_config = celery_config(replace(settings, broker_url="redis://127.0.0.1:6379/0"))
    assert redis_config["broker_transport"] == REDIS_TRANSPORT
    if not BROKER_URL.startswith("redis"):
        pytest.skip("publishing needs a real Redis")
    with Connection(BROKER_URL, transport=REDIS_TRANSPORT) as connection:
        assert isinstance(connection.transport, Transport)
        channel = connection.default_channel
        queue = f"publish-{uuid.uuid4().hex[:8]}"
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            first.lpush(queue, "one")
        channel._disconnect_pools()  # as after a lost connection: a new pool, a new client
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.rpop(queue) == b"one"
