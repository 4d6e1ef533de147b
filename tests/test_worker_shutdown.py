"""The shipped worker (docker-compose.yml's ``celery -A worker worker -P gevent``) on Redis:

- a warm shutdown (SIGTERM: what ``docker stop`` and ``make stack-stop`` send) finishes the turns
  it runs, and the messages it had taken but not started are run or handed back to the queue,
  none left unacknowledged; a new worker runs the rest, and every turn runs once (one reply
  each, first attempt, one LLM call);
- the soft time limit ends a turn ``turn_timeout`` under gevent, whose pool enforces only the
  hard one (worker/execution.py raises it).

The workers have a Redis database of their own, so no other worker of the suite takes a turn.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest
import redis
from sqlalchemy import func, select

from models import Message, Turn
from models.tasking import EXECUTE_TURN
from scripts import shipped
from tests.conftest import BROKER_URL, FAKE_MODEL, FAKE_PROVIDER
from tests.fake_llm import text_reply
from tests.helpers import accept_undispatched, post_turn, start_session, wait_done
from tests.processes import own_redis_url, start, stop, wait_for

pytestmark = pytest.mark.skipif(
    not BROKER_URL.startswith("redis"),
    reason="a warm shutdown hands messages back to Redis; the embedded broker dies with its process",
)

DELAY = 1.5  # each LLM call
TURNS = 8  # more than the first worker may take (concurrency x prefetch multiplier)
CONCURRENCY = 2


def worker_command(**options: str) -> list[str]:
    """docker-compose's worker command, with some of its options changed or added."""
    argv = shipped.local(shipped.service_command("worker"))
    for option, value in options.items():
        flag = f"--{option.replace('_', '-')}"
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


@pytest.fixture(scope="module")
def broker():
    return own_redis_url(BROKER_URL)


@pytest.fixture(scope="module")
def api(settings, broker):
    from api import create_app

    return create_app(replace(settings, broker_url=broker), {"TESTING": True}).test_client()


def start_worker(argv: list[str], log, broker: str) -> object:
    process = start(argv, log, {**os.environ, "CELERY_BROKER_URL": broker})
    wait_for(lambda: " ready." in log.read_text(), "the worker", [process], [log])
    return process


@pytest.fixture(scope="module")
def shipped_worker(broker, tmp_path_factory):
    """The worker exactly as compose runs it, on the module's broker."""
    log = tmp_path_factory.mktemp("shipped-worker") / "worker.log"
    process = start_worker(worker_command(), log, broker)
    yield process
    stop(process)


def _statuses(engine, turn_ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(Turn.id, Turn.status).where(Turn.id.in_(turn_ids)))
        return dict(rows.all())


def test_a_warm_shutdown_finishes_started_turns_and_hands_back_the_rest(
    request, api, broker, engine, make_user, make_agent, fake_llm, tmp_path
):
    fake_llm.respond_with(lambda _request: text_reply("an answer", delay=DELAY))
    user = make_user()
    agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    sessions = [start_session(api, user, agent=agent)["id"] for _ in range(TURNS)]
    queue = redis.Redis.from_url(broker)
    # Two turns at a time, and room to take more messages than it runs.
    log = tmp_path / "first.log"
    argv = worker_command(concurrency=str(CONCURRENCY), prefetch_multiplier="3")
    first = start_worker(argv, log, broker)
    try:
        turns = [post_turn(api, user, session, "hello").json["id"] for session in sessions]

        def holding_unstarted() -> bool:
            statuses = _statuses(engine, turns)
            running = sum(status == "running" for status in statuses.values())
            return running == CONCURRENCY and queue.hlen("unacked") > running

        wait_for(holding_unstarted, "the worker to take more turns than it runs", [first], [log])
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    finally:
        stop(first)

    statuses = _statuses(engine, turns)
    finished = [t for t in turns if statuses[t] == "completed"]
    waiting = [t for t in turns if statuses[t] == "queued"]
    # It finished the turns it ran, and the one it held for a free slot of its pool (gevent
    # starts it as a slot frees, even during the shutdown); every other turn's message is back
    # in the queue, and none is left with the dead worker (it would wait out the visibility
    # timeout, 10 minutes, before Redis handed it on).
    assert len(finished) >= CONCURRENCY and len(finished) + len(waiting) == TURNS, statuses
    assert waiting
    assert queue.llen("turns") == len(waiting)
    assert queue.hlen("unacked") == 0
    assert "Warm shutdown" in log.read_text()

    request.getfixturevalue("shipped_worker")
    deadline = time.monotonic() + 30
    while set(_statuses(engine, turns).values()) != {"completed"}:
        assert time.monotonic() < deadline, _statuses(engine, turns)
        time.sleep(0.1)
    with engine.connect() as conn:
        replies = conn.execute(
            select(Message.turn_id, func.count())
            .where(Message.turn_id.in_(turns), Message.role == "assistant")
            .group_by(Message.turn_id)
        ).all()
        attempts = conn.execute(select(Turn.attempt).where(Turn.id.in_(turns))).scalars().all()
    assert dict(replies) == dict.fromkeys(turns, 1)
    assert set(attempts) == {1}  # none was claimed twice
    assert len(fake_llm.requests) == TURNS


def test_the_soft_time_limit_ends_a_turn_under_gevent(
    shipped_worker, api, settings, broker, make_user, make_agent, fake_llm
):
    from api.broker import make_celery_client

    fake_llm.respond_with(lambda _request: text_reply("too late", delay=3))
    user = make_user()
    agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    session = start_session(api, user, agent=agent)["id"]
    turn = accept_undispatched(settings, user, session)
    began = time.monotonic()
    # This message's soft limit: 1 s (the configured one is minutes).
    producer = make_celery_client(replace(settings, broker_url=broker))
    producer.send_task(EXECUTE_TURN, args=[turn], soft_time_limit=1)
    view = wait_done(api, user, turn)
    assert (view["status"], view["stop_reason"]) == ("failed", "turn_timeout"), view
    assert view["error"]["code"] == "turn_timeout"
    assert time.monotonic() - began < 3  # not the LLM's answer, nor the hard limit
