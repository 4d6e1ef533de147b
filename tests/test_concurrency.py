"""Concurrent turn POSTs on a real worker: 50 at once on one session under each multitask
policy, and 200 across 50 sessions. A sampler reads the database while they run: never two
active turns (queued or running) in one session, whatever the interleaving.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError

from models import Message, Turn, UsageRecord
from models.db import make_sessionmaker
from tests.helpers import TERMINAL, post_turn, start_session, wait_done
from worker.providers.instant import InstantProvider

pytestmark = pytest.mark.usefixtures("celery_worker")

POSTS = 50

# Sessions (among those given) with more than one active turn, and the running turns overall.
_OVERLAPS = text(
    "SELECT session_id, COUNT(*) FROM turns WHERE status IN ('queued', 'running')"
    " AND session_id IN :ids GROUP BY session_id HAVING COUNT(*) > 1"
).bindparams(bindparam("ids", expanding=True))
_ACTIVE = text(
    "SELECT COUNT(*) FROM turns WHERE status IN ('queued', 'running') AND session_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


class ActiveTurnSampler:
    """Reads the sessions' active turns in a thread of its own until stopped; every overlap it
    sees is kept. Each sample is one statement, so it sees one consistent snapshot."""

    def __init__(self, engine, session_ids) -> None:
        self.engine = engine
        self.ids = list(session_ids)
        self.samples = 0
        self.busy_samples = 0  # samples that saw an active turn: the sampling was not vacuous
        self.overlaps: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                self.overlaps += conn.execute(_OVERLAPS, {"ids": self.ids}).all()
                self.busy_samples += bool(conn.scalar(_ACTIVE, {"ids": self.ids}))
                conn.rollback()
                self.samples += 1
                time.sleep(0.002)

    def __enter__(self) -> ActiveTurnSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _post_all(app, user, jobs, *, workers=None):
    """POST every ``(session_id, content, body)`` of ``jobs`` at once from threads, each with
    its own test client, released together by a barrier; the responses in ``jobs``' order."""
    workers = workers or len(jobs)
    barrier = threading.Barrier(workers)
    local = threading.local()

    def post(job):
        if not hasattr(local, "client"):
            local.client = app.test_client()
            barrier.wait()
        session_id, content, body = job
        return post_turn(local.client, user, session_id, content, **body)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(post, jobs))


def _turns(engine, session_ids):
    with make_sessionmaker(engine)() as db:
        return db.scalars(
            select(Turn).where(Turn.session_id.in_(session_ids)).order_by(Turn.id)
        ).all()


def _messages_by_turn(engine, session_ids):
    with make_sessionmaker(engine)() as db:
        rows = db.scalars(
            select(Message).where(Message.session_id.in_(session_ids)).order_by(Message.id)
        ).all()
    by_turn = defaultdict(list)
    for row in rows:
        by_turn[row.turn_id].append(row)
    return rows, by_turn


def _usage_per_turn(engine, turn_ids) -> Counter:
    with make_sessionmaker(engine)() as db:
        rows = db.execute(
            select(UsageRecord.turn_id, func.count())
            .where(UsageRecord.turn_id.in_(turn_ids))
            .group_by(UsageRecord.turn_id)
        ).all()
    return Counter(dict(rows))


def _assert_one_at_a_time(turns):
    """Each started turn ran after the one before it (by id) had ended."""
    ran = [t for t in turns if t.started_at is not None]
    for earlier, later in zip(ran, ran[1:], strict=False):
        assert earlier.completed_at <= later.started_at, (earlier.id, later.id)


def _assert_index_refuses_a_second_active_turn(engine, session_id):
    """The partial unique index itself: two active turns in one session cannot be written."""
    with make_sessionmaker(engine)() as db:
        first, second = db.scalars(
            select(Turn.id).where(Turn.session_id == session_id).order_by(Turn.id).limit(2)
        ).all()
        db.execute(update(Turn).where(Turn.id == first).values(status="running"))
        with pytest.raises(IntegrityError):
            db.execute(update(Turn).where(Turn.id == second).values(status="queued"))
            db.flush()
        db.rollback()


def _wait_all(client, user, turn_ids, timeout=60.0):
    return {turn_id: wait_done(client, user, turn_id, timeout)["status"] for turn_id in turn_ids}


@pytest.fixture
def gate(monkeypatch):
    """While ``gate`` is not set, the instant provider's calls wait for it (at most 30 s)."""
    event = threading.Event()
    original = InstantProvider.complete

    def gated(self, *args, **kwargs):
        event.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InstantProvider, "complete", gated)
    yield event
    event.set()


def test_reject_while_the_first_turn_runs_gives_one_202_and_49_409s(
    app, client, engine, user, make_agent, gate
):
    session = start_session(client, user, agent=make_agent(user), multitask="reject")
    jobs = [(session["id"], f"message {i}", {}) for i in range(POSTS)]
    with ActiveTurnSampler(engine, [session["id"]]) as sampler:
        results = _post_all(app, user, jobs)
        gate.set()
        accepted = [r.json["id"] for r in results if r.status_code == 202]
        assert len(accepted) == 1, Counter(r.status_code for r in results)
        assert _wait_all(client, user, accepted) == {accepted[0]: "completed"}
    rejected = [r.json for r in results if r.status_code == 409]
    assert len(rejected) == POSTS - 1
    assert {(b["code"], b["active_turn_id"]) for b in rejected} == {("turn_active", accepted[0])}
    assert sampler.overlaps == [] and sampler.busy_samples
    assert len(_turns(engine, [session["id"]])) == 1  # a rejected POST writes nothing


def test_reject_with_turns_finishing_meanwhile_accepts_only_into_an_idle_session(
    app, client, engine, user, make_agent
):
    """The worker answers at once, so the active turn may end during the burst and a later POST
    is accepted: each 202 found the session idle, each 409 names a turn accepted before it."""
    session = start_session(client, user, agent=make_agent(user), multitask="reject")
    jobs = [(session["id"], f"message {i}", {}) for i in range(POSTS)]
    with ActiveTurnSampler(engine, [session["id"]]) as sampler:
        results = _post_all(app, user, jobs)
        accepted = sorted(r.json["id"] for r in results if r.status_code == 202)
        statuses = _wait_all(client, user, accepted)
    assert sampler.overlaps == [] and sampler.busy_samples
    rejected = [r.json for r in results if r.status_code == 409]
    assert accepted and len(accepted) + len(rejected) == POSTS
    assert set(statuses.values()) == {"completed"}
    for body in rejected:
        assert body["code"] == "turn_active" and body["active_turn_id"] in accepted
    turns = _turns(engine, [session["id"]])
    assert [t.id for t in turns] == accepted
    # Accepted only when nothing was unfinished: each turn ran after the one before had ended.
    _assert_one_at_a_time(turns)


def test_enqueue_runs_all_50_in_posting_order(app, client, engine, user, make_agent):
    session = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    jobs = [(session["id"], f"message {i}", {}) for i in range(POSTS)]
    with ActiveTurnSampler(engine, [session["id"]]) as sampler:
        results = _post_all(app, user, jobs)
        assert [r.status_code for r in results] == [202] * POSTS
        accepted = sorted(r.json["id"] for r in results)
        statuses = _wait_all(client, user, accepted)
    assert set(statuses.values()) == {"completed"}
    assert sampler.overlaps == [] and sampler.busy_samples
    turns = _turns(engine, [session["id"]])
    assert [t.id for t in turns] == accepted
    _assert_one_at_a_time(turns)
    # Posting order is the order the user messages entered the history; the turns ran in it.
    rows, by_turn = _messages_by_turn(engine, [session["id"]])
    posted = [m.turn_id for m in rows if m.role == "user"]
    by_start = [t.id for t in sorted(turns, key=lambda t: (t.started_at, t.id))]
    assert posted == accepted == by_start
    for turn_id in accepted:
        assert [(m.step, m.role) for m in by_turn[turn_id]] == [(0, "user"), (1, "assistant")]
    assert _usage_per_turn(engine, accepted) == Counter(dict.fromkeys(accepted, 1))
    _assert_index_refuses_a_second_active_turn(engine, session["id"])


def test_interrupt_leaves_the_last_turn_completed_and_every_other_ended(
    app, client, engine, user, make_agent, monkeypatch
):
    # A call that takes a little time, so that interrupts also land on running turns.
    original = InstantProvider.complete

    def slower(self, *args, **kwargs):
        time.sleep(0.02)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InstantProvider, "complete", slower)
    session = start_session(client, user, agent=make_agent(user), multitask="interrupt")
    jobs = [(session["id"], f"message {i}", {}) for i in range(POSTS)]
    with ActiveTurnSampler(engine, [session["id"]]) as sampler:
        results = _post_all(app, user, jobs)
        assert [r.status_code for r in results] == [202] * POSTS
        accepted = sorted(r.json["id"] for r in results)
        statuses = _wait_all(client, user, accepted)
    assert sampler.overlaps == [] and sampler.busy_samples
    assert statuses[accepted[-1]] == "completed"
    assert set(statuses.values()) <= {"completed", "cancelled"}
    turns = _turns(engine, [session["id"]])
    cancelled = [t for t in turns if t.status == "cancelled"]
    assert cancelled and {t.stop_reason for t in cancelled} == {"interrupted"}
    _assert_one_at_a_time([t for t in turns if t.status == "completed"])
    # Replies exactly once, and none for a turn that was interrupted: a single-step turn's reply
    # and its end are one fenced write.
    _, by_turn = _messages_by_turn(engine, [session["id"]])
    for turn in turns:
        replies = [m for m in by_turn[turn.id] if m.role == "assistant"]
        assert len(replies) == (turn.status == "completed"), turn.id
    # An interrupted call's usage still counts, but no call is recorded twice.
    usage = _usage_per_turn(engine, accepted)
    assert max(usage.values()) == 1
    assert all(usage[t.id] == 1 for t in turns if t.status == "completed")


def test_200_turns_across_50_sessions_all_complete_in_order(app, client, engine, user, make_agent):
    sessions = [
        start_session(client, user, agent=make_agent(user), multitask="enqueue")["id"]
        for _ in range(50)
    ]
    # Interleaved across sessions, so each session's four POSTs race with the others'.
    jobs = [(sid, f"turn {n} of {sid}", {}) for n in range(4) for sid in sessions]
    with ActiveTurnSampler(engine, sessions) as sampler:
        results = _post_all(app, user, jobs, workers=50)
        assert [r.status_code for r in results] == [202] * len(jobs)
        accepted = sorted(r.json["id"] for r in results)
        statuses = _wait_all(client, user, accepted)
    assert set(statuses.values()) == {"completed"} and len(statuses) == 200
    assert sampler.overlaps == [] and sampler.busy_samples
    turns = _turns(engine, sessions)
    assert len(turns) == 200 and all(t.status in TERMINAL for t in turns)
    rows, by_turn = _messages_by_turn(engine, sessions)
    for sid in sessions:
        own = [t for t in turns if t.session_id == sid]
        assert len(own) == 4
        _assert_one_at_a_time(own)
        posted = [m.turn_id for m in rows if m.session_id == sid and m.role == "user"]
        by_start = [t.id for t in sorted(own, key=lambda t: (t.started_at, t.id))]
        assert posted == [t.id for t in own] == by_start
    for turn in turns:
        assert [(m.step, m.role) for m in by_turn[turn.id]] == [(0, "user"), (1, "assistant")]
    assert _usage_per_turn(engine, accepted) == Counter(dict.fromkeys(accepted, 1))
