"""The turn lifecycle through a real Celery worker on the test broker."""

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import event, func, select, update

from models import Message, Turn, utcnow
from tests.conftest import BROKER_URL
from tests.helpers import accept_undispatched, messages, post_turn, start_session, wait_done

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_post_poll_completed_with_reply_in_history(client, user, make_agent):
    agent = make_agent(user, name="helper")
    session = start_session(client, user, agent=agent)
    r = post_turn(client, user, session["id"], "What is Roomcast?")
    assert r.status_code == 202
    assert r.headers["Location"] == f"/api/v1/turns/{r.json['id']}"
    assert r.headers["Retry-After"] == "1"
    assert r.json["status"] in ("queued", "running", "completed")
    assert r.json["session_id"] == session["id"] and r.json["input_message_id"]

    turn = wait_done(client, user, r.json["id"])
    assert turn["status"] == "completed" and turn["stop_reason"] == "completed"
    assert turn["error"] is None and turn["attempt"] == 1
    assert turn["started_at"] and turn["completed_at"] >= turn["started_at"]
    assert len(turn["message_ids"]) == 1
    assert turn["usage"]["total_tokens"] > 0

    history = messages(client, user, session["id"])
    assert [(m["role"], m["step"]) for m in history] == [("user", 0), ("assistant", 1)]
    assert history[0]["content"] == "What is Roomcast?"
    assert history[1]["agent_id"] == agent.id and history[1]["content"]
    assert history[1]["id"] == turn["message_ids"][0]


def test_room_sequential_turn_reports_per_agent_progress(client, user, make_agent, make_room):
    agents = [make_agent(user, name=n) for n in ("ann", "bob", "cy")]
    room = make_room(user, agents, mode="sequential")
    session = start_session(client, user, room=room)
    turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    assert turn["status"] == "completed"
    speakers = turn["progress"]["speakers"]
    assert [s["name"] for s in speakers] == ["ann", "bob", "cy"]
    assert all(s["status"] == "done" for s in speakers)
    history = messages(client, user, session["id"])
    assert [m["agent_id"] for m in history[1:]] == [a.id for a in agents]
    assert [s["message_id"] for s in speakers] == [m["id"] for m in history[1:]]


def test_a_post_on_postgresql_accepts_in_one_statement(client, app, user, make_agent):
    engine = app.extensions["roomcast"].engine
    if engine.dialect.name != "postgresql":
        pytest.skip("data-modifying CTEs are PostgreSQL's")
    session = start_session(client, user, agent=make_agent(user))
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        r = post_turn(client, user, session["id"], "one round trip")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert r.status_code == 202 and r.json["status"] in ("queued", "running", "completed")
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len(writes) == 1 and writes[0].lstrip().startswith("WITH"), writes
    turn = wait_done(client, user, r.json["id"])
    assert turn["input_message_id"] == r.json["input_message_id"]
    history = messages(client, user, session["id"])
    assert [(m["content"], m["turn_id"]) for m in history[:1]] == [("one round trip", turn["id"])]


def test_invalid_turn_bodies_write_nothing(client, user, make_agent):
    session = start_session(client, user, agent=make_agent(user))
    for body in (
        {},
        {"content": ""},
        {"content": "   "},
        {"content": 5},
        {"content": "x" * 32001},
        {"content": "hi", "status": "completed"},
        {"content": "hi", "multitask": "later"},
        {"content": "hi", "metadata": [1]},
    ):
        r = client.post(f"/api/v1/sessions/{session['id']}/turns", json=body, headers=user.headers)
        assert r.status_code == 422, (body, r.json)
        assert r.json["code"] == "validation_error" and r.json["errors"]
    r = client.post(
        f"/api/v1/sessions/{session['id']}/turns",
        data="{",
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert messages(client, user, session["id"]) == []
    assert (
        client.get(f"/api/v1/sessions/{session['id']}/turns", headers=user.headers).json["data"]
        == []
    )


def test_broker_down_at_post_is_accepted_and_completes_after(
    client, user, make_agent, settings, app, db
):
    """The producer cannot reach its broker: 202 anyway; the outbox sweep sends it later."""
    from api import create_app
    from worker import app as celery_app
    from worker.maintenance import sweep_outbox

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    started = time.monotonic()
    r = post_turn(broken.test_client(), user, session["id"])
    assert r.status_code == 202
    assert time.monotonic() - started < 10  # a short, bounded try
    turn_id = r.json["id"]
    row = db.get(Turn, turn_id)
    assert row.status == "queued" and row.dispatched_at is None

    assert turn_id in sweep_outbox(celery_app)  # the broker is back
    assert wait_done(client, user, turn_id)["status"] == "completed"
    assert len(messages(client, user, session["id"])) == 2


def test_duplicate_delivery_writes_one_reply(client, user, make_agent, settings, app, db):
    from api import create_app
    from models.tasking import EXECUTE_TURN
    from worker import app as celery_app

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    turn_id = post_turn(broken.test_client(), user, session["id"]).json["id"]
    for _ in range(3):
        celery_app.send_task(EXECUTE_TURN, args=[turn_id])
    turn = wait_done(client, user, turn_id)
    time.sleep(0.5)  # let the duplicate deliveries run too
    assert turn["status"] == "completed" and turn["attempt"] == 1
    count = db.scalar(select(func.count()).select_from(Message).where(Message.turn_id == turn_id))
    assert count == 2  # the user's message and one reply


def _post_concurrently(client_factory, user, session_id, n, **body):
    results = [None] * n
    barrier = threading.Barrier(n)

    def post(i):
        client = client_factory()
        barrier.wait()
        results[i] = post_turn(client, user, session_id, f"message {i}", **body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _assert_never_overlapping(db, turn_ids):
    rows = db.scalars(select(Turn).where(Turn.id.in_(turn_ids)).order_by(Turn.started_at)).all()
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert earlier.completed_at <= later.started_at, (earlier.id, later.id)


def test_concurrent_posts_reject_policy(client, app, user, make_agent, db):
    session = start_session(client, user, agent=make_agent(user))
    results = _post_concurrently(app.test_client, user, session["id"], 20)
    accepted = [r.json["id"] for r in results if r.status_code == 202]
    rejected = [r.json for r in results if r.status_code == 409]
    assert len(accepted) + len(rejected) == 20 and accepted
    for body in rejected:
        assert body["code"] == "turn_active" and body["active_turn_id"] in accepted
    for turn_id in accepted:
        assert wait_done(client, user, turn_id)["status"] == "completed"
    db.expire_all()
    _assert_never_overlapping(db, accepted)


def test_concurrent_posts_enqueue_policy_runs_all_in_order(client, app, user, make_agent, db):
    session = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    results = _post_concurrently(app.test_client, user, session["id"], 20)
    assert [r.status_code for r in results] == [202] * 20
    accepted = sorted(r.json["id"] for r in results)
    for turn_id in accepted:
        assert wait_done(client, user, turn_id)["status"] == "completed"
    db.expire_all()
    rows = db.scalars(select(Turn).where(Turn.id.in_(accepted)).order_by(Turn.id)).all()
    assert [r.started_at for r in rows] == sorted(r.started_at for r in rows)
    _assert_never_overlapping(db, accepted)
    history = messages(client, user, session["id"], limit=100)
    assert len(history) == 40


def test_enqueue_per_post_override_and_interrupt(client, settings, user, make_agent, db):
    from api import create_app

    # A producer with no broker keeps turns queued, so the policies can be observed.
    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    bc = broken.test_client()
    session = start_session(client, user, agent=make_agent(user))
    first = post_turn(bc, user, session["id"], "one").json
    r = post_turn(bc, user, session["id"], "two")
    assert r.status_code == 409 and r.json["active_turn_id"] == first["id"]
    second = post_turn(bc, user, session["id"], "two", multitask="enqueue").json
    assert second["status"] == "pending"
    third = post_turn(bc, user, session["id"], "three", multitask="interrupt")
    assert third.status_code == 202 and third.json["status"] == "queued"
    for turn_id in (first["id"], second["id"]):
        turn = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
        assert turn["status"] == "cancelled" and turn["stop_reason"] == "interrupted"


def test_cancel_queued_turn_promotes_the_next_pending(client, settings, user, make_agent):
    from api import create_app

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    bc = broken.test_client()
    session = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    first = post_turn(bc, user, session["id"], "one").json
    second = post_turn(bc, user, session["id"], "two").json
    assert second["status"] == "pending"

    r = client.post(f"/api/v1/turns/{first['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert r.json["stop_reason"] == "cancelled" and r.json["completed_at"]
    again = client.post(f"/api/v1/turns/{first['id']}/cancel", headers=user.headers)
    assert again.status_code == 200 and again.json["status"] == "cancelled"  # idempotent
    # The next turn was promoted and dispatched through the working producer.
    assert wait_done(client, user, second["id"])["status"] == "completed"
    r = client.post(f"/api/v1/turns/{second['id']}/cancel", headers=user.headers)
    assert r.status_code == 409 and r.json["code"] == "turn_finished"
    history = messages(client, user, session["id"])
    assert [m["turn_id"] for m in history] == [first["id"], second["id"], second["id"]]


def test_idempotency_key(client, app, make_user, make_agent, db):
    alice, bob = make_user(), make_user()
    session = start_session(client, alice, agent=make_agent(alice))
    key = {"Idempotency-Key": "order-42"}
    first = post_turn(client, alice, session["id"], "hi", headers=key)
    assert first.status_code == 202
    again = post_turn(client, alice, session["id"], "hi", headers=key)
    assert again.status_code == 200 and again.json["id"] == first.json["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    different = post_turn(client, alice, session["id"], "something else", headers=key)
    assert different.status_code == 422 and different.json["code"] == "idempotency_key_reused"
    wait_done(client, alice, first.json["id"])
    # After completion the same key still answers with the original.
    assert post_turn(client, alice, session["id"], "hi", headers=key).json["id"] == first.json["id"]
    # Keys are per user.
    bob_session = start_session(client, bob, agent=make_agent(bob))
    assert post_turn(client, bob, bob_session["id"], "hi", headers=key).status_code == 202
    too_long = post_turn(client, alice, session["id"], "hi", headers={"Idempotency-Key": "k" * 300})
    assert too_long.status_code == 422
    count = db.scalar(
        select(func.count()).select_from(Turn).where(Turn.session_id == session["id"])
    )
    assert count == 1


def test_concurrent_posts_with_one_idempotency_key_make_one_turn(client, app, user, make_agent, db):
    session = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    results = _post_concurrently(
        app.test_client, user, session["id"], 8, headers={"Idempotency-Key": "same"}
    )
    # Each thread sent a different body ("message i"): one wins, the others are told so.
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(202) == 1 and set(statuses) <= {202, 422}
    count = db.scalar(
        select(func.count()).select_from(Turn).where(Turn.session_id == session["id"])
    )
    assert count == 1


def test_etag_304_and_long_poll(client, user, make_agent):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = post_turn(client, user, session["id"]).json["id"]
    done = wait_done(client, user, turn_id)
    r = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers)
    etag = r.headers["ETag"]
    assert r.json == done and "Retry-After" not in r.headers
    r = client.get(f"/api/v1/turns/{turn_id}", headers={**user.headers, "If-None-Match": etag})
    assert r.status_code == 304
    # A finished turn never makes a long-poll wait.
    started = time.monotonic()
    r = client.get(
        f"/api/v1/turns/{turn_id}?wait=5", headers={**user.headers, "If-None-Match": etag}
    )
    assert r.status_code == 304 and time.monotonic() - started < 1
    for bad in ("-1", "31", "soon"):
        assert (
            client.get(f"/api/v1/turns/{turn_id}?wait={bad}", headers=user.headers).status_code
            == 422
        )


def test_poll_body_headers_and_304(client, settings, user, make_user, make_agent):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = post_turn(client, user, session["id"]).json["id"]
    wait_done(client, user, turn_id)
    url = f"/api/v1/turns/{turn_id}"
    r = client.get(url, headers=user.headers)
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert "Location" not in r.headers and "Retry-After" not in r.headers
    # The poll's view of the turn is the one the session's turn list gives.
    listed = client.get(f"/api/v1/sessions/{session['id']}/turns", headers=user.headers).json
    assert r.json == listed["data"][0]
    etag = r.headers["ETag"]
    r = client.get(url, headers={**user.headers, "If-None-Match": f'"stale", {etag}'})
    assert r.status_code == 304 and r.data == b"" and r.headers["ETag"] == etag
    r = client.get(url, headers={**user.headers, "If-None-Match": '"stale"'})
    assert r.status_code == 200 and r.headers["ETag"] == etag
    # Another user's turn is not there, with or without a validator.
    stranger = make_user().headers
    assert client.get(url, headers=stranger).status_code == 404
    assert client.get(url, headers={**stranger, "If-None-Match": etag}).status_code == 404

    # An unfinished turn says when to poll again.
    from api import create_app

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    queued = post_turn(broken.test_client(), user, session["id"]).json
    r = client.get(f"/api/v1/turns/{queued['id']}", headers=user.headers)
    assert r.status_code == 200 and r.json["status"] == "queued"
    assert r.headers["Retry-After"] == "1"
    client.post(f"/api/v1/turns/{queued['id']}/cancel", headers=user.headers)


def test_long_poll_returns_as_soon_as_the_turn_changes(client, settings, user, make_agent):
    from api import create_app
    from worker import app as celery_app
    from worker.maintenance import sweep_outbox

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    turn = post_turn(broken.test_client(), user, session["id"]).json
    etag = client.get(f"/api/v1/turns/{turn['id']}", headers=user.headers).headers["ETag"]
    timer = threading.Timer(0.5, sweep_outbox, args=(celery_app,))
    timer.start()
    started = time.monotonic()
    r = client.get(
        f"/api/v1/turns/{turn['id']}?wait=20", headers={**user.headers, "If-None-Match": etag}
    )
    elapsed = time.monotonic() - started
    timer.join()
    assert r.status_code == 200 and r.json["status"] != "queued"
    assert 0.4 < elapsed < 5
    assert r.headers["ETag"] != etag


def test_long_poll_times_out_with_304(client, settings, user, make_agent):
    from api import create_app

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    turn = post_turn(broken.test_client(), user, session["id"]).json
    etag = client.get(f"/api/v1/turns/{turn['id']}", headers=user.headers).headers["ETag"]
    started = time.monotonic()
    r = client.get(
        f"/api/v1/turns/{turn['id']}?wait=1.5", headers={**user.headers, "If-None-Match": etag}
    )
    assert r.status_code == 304 and 1.4 < time.monotonic() - started < 4
    client.post(f"/api/v1/turns/{turn['id']}/cancel", headers=user.headers)


def test_embedded_maintenance_timer_sends_undispatched_turns(client, settings, user, make_agent):
    from api import create_app
    from worker import app as celery_app
    from worker.embedded import start_maintenance_timer

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    turn_id = post_turn(broken.test_client(), user, session["id"]).json["id"]
    stop = start_maintenance_timer(celery_app, settings.broker_url, interval=0.2)
    try:
        assert wait_done(client, user, turn_id, timeout=15)["status"] == "completed"
    finally:
        stop.set()


def test_reaper_fails_exhausted_and_unstarted_turns_and_promotes_the_next(
    client, settings, user, make_agent, db
):
    from datetime import timedelta

    from api import create_app
    from models import utcnow
    from models.lifecycle import MAX_ATTEMPTS, QUEUE_TIMEOUT
    from worker import app as celery_app
    from worker.maintenance import reap_expired

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    bc = broken.test_client()
    dead = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    lost = post_turn(bc, user, dead["id"]).json["id"]
    waiting = post_turn(bc, user, dead["id"]).json["id"]
    unclaimed_session = start_session(client, user, agent=make_agent(user))
    unclaimed = post_turn(bc, user, unclaimed_session["id"]).json["id"]
    # A turn whose worker died on its last allowed attempt, and one nobody ever picked up.
    row = db.get(Turn, lost)
    row.status, row.attempt, row.lease_expires_at = (
        "running",
        MAX_ATTEMPTS,
        utcnow() - timedelta(seconds=1),
    )
    db.get(Turn, unclaimed).updated_at = utcnow() - QUEUE_TIMEOUT - timedelta(seconds=1)
    db.commit()

    requeued, failed = reap_expired(celery_app, settings.broker_url)
    # Only ours are asserted: a turn another test left running may be reaped too.
    assert not {lost, unclaimed} & set(requeued) and {lost, unclaimed} <= set(failed)
    lost_view = client.get(f"/api/v1/turns/{lost}", headers=user.headers).json
    assert lost_view["status"] == "failed" and lost_view["error"]["code"] == "worker_lost"
    unclaimed_view = client.get(f"/api/v1/turns/{unclaimed}", headers=user.headers).json
    assert unclaimed_view["stop_reason"] == "not_started" and unclaimed_view["error"]["message"]
    # The turn waiting behind the lost one runs now.
    assert wait_done(client, user, waiting)["status"] == "completed"


@pytest.mark.skipif(not BROKER_URL.startswith("redis"), reason="a Redis broker's data loss")
def test_a_broker_that_lost_its_data_gets_every_queued_turn_again_at_once(
    client, user, make_agent, settings, db
):
    """Sent turns whose messages the broker lost (a restart without persistence) are sent again
    at the next sweep, not after REDISPATCH_AFTER."""
    import redis

    from worker import app as celery_app
    from worker.maintenance import BROKER_MARK, sweep_outbox

    session = start_session(client, user, agent=make_agent(user))
    turn_id = accept_undispatched(settings, user, session["id"])
    # As if it had been sent a moment ago, and the message were gone.
    db.execute(update(Turn).where(Turn.id == turn_id).values(dispatched_at=utcnow()))
    db.commit()
    broker = redis.Redis.from_url(BROKER_URL)
    broker.set(BROKER_MARK, "1")
    assert turn_id not in sweep_outbox(celery_app, BROKER_URL)  # recent: still in the broker

    broker.delete(BROKER_MARK)  # the broker's data is gone
    assert turn_id in sweep_outbox(celery_app, BROKER_URL)
    assert broker.exists(BROKER_MARK)  # marked again: the next sweep is an ordinary one
    assert wait_done(client, user, turn_id)["status"] == "completed"


@pytest.mark.skipif(not BROKER_URL.startswith("redis"), reason="reads a Redis broker's queue")
def test_a_turn_whose_message_a_dead_worker_took_is_sent_again_when_the_queue_is_empty(
    client, user, make_agent, settings, db, monkeypatch
):
    """Sent 30 s ago, not claimed, and nothing waits in the broker's queue: a worker took its
    message and died before claiming (or holds it behind a long call). Sent again at once; with
    a backlog in the queue it waits for REDISPATCH_AFTER."""
    from datetime import timedelta

    import redis

    from worker import app as celery_app
    from worker import maintenance
    from worker.maintenance import BROKER_MARK, STALE_WHEN_IDLE, sweep_outbox

    redis.Redis.from_url(BROKER_URL).set(BROKER_MARK, "1")  # no data loss here
    session = start_session(client, user, agent=make_agent(user))
    turn_id = accept_undispatched(settings, user, session["id"])
    sent = utcnow() - STALE_WHEN_IDLE - timedelta(seconds=1)
    db.execute(update(Turn).where(Turn.id == turn_id).values(dispatched_at=sent))
    db.commit()

    monkeypatch.setattr(maintenance, "broker_queue_empty", lambda url: False)
    assert turn_id not in sweep_outbox(celery_app, BROKER_URL)  # may still be in line
    monkeypatch.undo()
    assert maintenance.broker_queue_empty(BROKER_URL)
    assert turn_id in sweep_outbox(celery_app, BROKER_URL)
    assert wait_done(client, user, turn_id)["status"] == "completed"
