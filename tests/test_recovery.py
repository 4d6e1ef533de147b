"""A worker process killed (SIGKILL) mid-turn: the turn is taken over and completes, with
exactly one reply and one usage record per step."""

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from models import Message, Turn, UsageRecord
from tests.conftest import BROKER_URL, FAKE_MODEL, FAKE_PROVIDER
from tests.helpers import (
    accept_undispatched,
    celery_worker_process,
    post_turn,
    start_session,
    wait_done,
)

pytestmark = pytest.mark.usefixtures("celery_worker")

LEASE_SECONDS = 2


def _worker_process(turn_id: int, tmp_path) -> subprocess.Popen:
    """A separate worker process running the turn: a Celery worker on a queue of its own when
    the broker is Redis; with the in-process broker, a process that runs the task's function."""
    lease = {"ROOMCAST_TURN_LEASE_SECONDS": str(LEASE_SECONDS)}
    if BROKER_URL.startswith("redis"):
        from models.tasking import EXECUTE_TURN
        from worker import app as celery_app

        queue = f"kill-{uuid.uuid4().hex[:8]}"
        proc = celery_worker_process(queue, tmp_path / "worker.log", **lease)
        celery_app.send_task(EXECUTE_TURN, args=[turn_id], queue=queue)
        return proc
    code = (
        "from worker.app import app, settings\n"
        "from worker.execution import execute_turn\n"
        f"execute_turn({turn_id}, settings, app)\n"
    )
    with (tmp_path / "worker.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code], env={**os.environ, **lease}, stdout=log, stderr=log
        )


def _count(db, model, turn_id):
    return db.scalar(select(func.count()).select_from(model).where(model.turn_id == turn_id))


def test_worker_killed_mid_turn_is_taken_over(
    client, settings, user, make_agent, make_room, fake_llm, db, tmp_path
):
    from worker import app as celery_app
    from worker.maintenance import reap_expired

    fake_llm.respond_with(lambda request: fake_reply(request))
    agents = [
        make_agent(
            user, name=n, provider=FAKE_PROVIDER, model=FAKE_MODEL, system_prompt=f"You are {n}."
        )
        for n in ("ann", "bob", "cy")
    ]
    session = start_session(client, user, room=make_room(user, agents, mode="sequential"))
    # Accept the turn without dispatching it, so only the process below runs it first.
    turn_id = accept_undispatched(settings, user, session["id"])

    proc = _worker_process(turn_id, tmp_path)
    try:
        deadline = time.monotonic() + 60
        # Kill it once step 1 is committed and step 2's (slow) LLM call is in flight.
        while _count(db, Message, turn_id) < 2 or len(fake_llm.requests) < 2:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
            db.expire_all()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    db.expire_all()
    assert db.get(Turn, turn_id).status == "running"  # orphaned, lease still running out
    deadline = time.monotonic() + 30
    # Ours: a turn another test left running may be requeued first, once its lease is over.
    while turn_id not in reap_expired(celery_app, settings.broker_url)[0]:
        assert time.monotonic() < deadline, "the reaper never took the turn over"
        time.sleep(0.2)

    turn = wait_done(client, user, turn_id)
    assert turn["status"] == "completed" and turn["attempt"] == 2
    steps = db.execute(
        select(Message.step, Message.agent_id)
        .where(Message.turn_id == turn_id)
        .order_by(Message.step)
    ).all()
    assert steps == [(0, None), (1, agents[0].id), (2, agents[1].id), (3, agents[2].id)]
    rows = db.execute(
        select(UsageRecord.step, UsageRecord.attempt)
        .where(UsageRecord.turn_id == turn_id)
        .order_by(UsageRecord.step)
    ).all()
    # Step 1 was recorded by the killed attempt and not redone; 2 and 3 by the take-over.
    assert rows == [(1, 1), (2, 2), (3, 2)]
    assert turn["usage"]["total_tokens"] == db.scalar(
        select(func.sum(UsageRecord.total_tokens)).where(UsageRecord.turn_id == turn_id)
    )
    assert [s["status"] for s in turn["progress"]["speakers"]] == ["done", "done", "done"]


def fake_reply(request):
    from tests.fake_llm import text_reply

    name = request.system_prompt.split("You are ")[1].split(".")[0]
    # Step 1 answers at once; later steps are slow enough to be killed in the middle of.
    return text_reply(f"{name} here.", delay=0 if name == "ann" else 1.0)


def test_a_long_call_keeps_its_short_lease(
    client, settings, user, make_agent, fake_llm, db, monkeypatch
):
    """The lease outlives a call several leases long: the reaper leaves the turn alone."""
    import worker.tasks
    from worker import app as celery_app
    from worker.maintenance import reap_expired

    lease = 1  # the call (under the provider's 5-s timeout) lasts three and a half leases
    monkeypatch.setattr(worker.tasks, "settings", replace(settings, turn_lease_seconds=lease))
    fake_llm.reply("worth the wait", delay=3.5 * lease)
    agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    session = start_session(client, user, agent=agent)
    turn_id = post_turn(client, user, session["id"]).json["id"]
    deadline = time.monotonic() + 3.5 * lease - 0.3
    while time.monotonic() < deadline:
        requeued, failed = reap_expired(celery_app, settings.broker_url)
        assert turn_id not in requeued + failed
        time.sleep(0.25)
    turn = wait_done(client, user, turn_id)
    assert turn["status"] == "completed" and turn["attempt"] == 1
