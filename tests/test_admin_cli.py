"""The operator's commands (``flask --app api turns ...`` and ``users ...``), run through Flask's
CLI runner against the suite's database; turns are held (no worker) unless a test runs one."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from models import Turn
from models.base import utcnow
from tests.api_world import cancel_unfinished
from tests.helpers import post_turn, start_session, wait_done


@pytest.fixture
def run(held_app):
    runner = held_app.test_cli_runner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(args=list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result

    return invoke


@pytest.fixture
def held_turns(held_client, make_user, make_agent, engine):
    """A user with a held (queued, never run) turn and a pending one behind it."""
    user = make_user()
    session = start_session(held_client, user, agent=make_agent(user), multitask="enqueue")
    first = post_turn(held_client, user, session["id"], "first").json
    second = post_turn(held_client, user, session["id"], "second").json
    assert (first["status"], second["status"]) == ("queued", "pending")
    yield user, first["id"], second["id"]
    cancel_unfinished(engine, [user.id])


def test_queue_oldest_and_stuck_list_unfinished_turns(run, held_turns):
    _, first, second = held_turns
    report = json.loads(run("turns", "queue", "--json").output)
    assert report["queued"] >= 1 and report["pending"] >= 1
    assert report["oldest_queued_age_seconds"] >= 0
    assert "queued:" in run("turns", "queue").output

    oldest = json.loads(run("turns", "oldest", "--limit", "1000", "--json").output)
    assert {first, second} <= {t["id"] for t in oldest}
    # Stuck: queued longer than --older-than (a pending turn waits by design, it is not stuck).
    stuck = {
        t["id"] for t in json.loads(run("turns", "stuck", "--older-than", "0", "--json").output)
    }
    assert first in stuck and second not in stuck
    assert first not in {
        t["id"] for t in json.loads(run("turns", "stuck", "--older-than", "3600", "--json").output)
    }
    table = run("turns", "oldest", "--limit", "1000").output
    assert table.splitlines()[0].split()[:3] == ["ID", "SESSION", "USER"]


def test_show_prints_the_timeline_without_contents(run, held_turns):
    _, first, _ = held_turns
    shown = json.loads(run("turns", "show", str(first), "--json").output)
    assert shown["turn"]["status"] == "queued"
    events = [e["event"] for e in shown["timeline"]]
    assert events == ["accepted", "step 0: user"]
    text = run("turns", "show", str(first)).output
    assert "timeline:" in text and "first" not in text  # sizes, never the message itself
    assert "not found" in run("turns", "show", "999999999", ok=False).output


def test_fail_ends_the_turn_with_the_reason_and_promotes_the_next(
    run, held_turns, held_client, held_app
):
    user, first, second = held_turns
    held_app.extensions["roomcast"].celery.sent.clear()
    out = run("turns", "fail", str(first), "--reason", "stuck on a dead provider").output
    assert "failed" in out
    turn = held_client.get(f"/api/v1/turns/{first}", headers=user.headers).json
    assert (turn["status"], turn["stop_reason"]) == ("failed", "operator")
    assert turn["error"] == {"code": "failed_by_operator", "message": "stuck on a dead provider"}
    # The pending turn took its place and was sent to the workers.
    after = held_client.get(f"/api/v1/turns/{second}", headers=user.headers).json
    assert after["status"] == "queued"
    assert held_app.extensions["roomcast"].celery.sent == [("roomcast.turns.execute", [second])]
    # Failing it again, or without a reason, changes nothing.
    assert "already failed" in run("turns", "fail", str(first), "--reason", "x", ok=False).output
    run("turns", "fail", str(second), ok=False)


def test_fail_of_a_pending_turn_promotes_nothing(run, held_turns, held_client, held_app):
    user, first, second = held_turns
    run("turns", "fail", str(second), "--reason", "not wanted")
    statuses = [
        held_client.get(f"/api/v1/turns/{t}", headers=user.headers).json["status"]
        for t in (first, second)
    ]
    assert statuses == ["queued", "failed"]


def test_redispatch_sends_a_queued_turn_and_refuses_a_leased_one(run, held_turns, held_app, engine):
    _, first, second = held_turns
    sent = held_app.extensions["roomcast"].celery.sent
    sent.clear()
    assert "sent to the turns queue" in run("turns", "redispatch", str(first)).output
    assert sent == [("roomcast.turns.execute", [first])]
    # A pending turn is not runnable yet.
    assert "pending" in run("turns", "redispatch", str(second), ok=False).output
    # Running under a live lease: a worker has it.
    from datetime import timedelta

    with engine.begin() as conn:
        conn.execute(
            update(Turn)
            .where(Turn.id == first)
            .values(status="running", attempt=1, lease_expires_at=utcnow() + timedelta(minutes=5))
        )
    assert "live lease" in run("turns", "redispatch", str(first), ok=False).output
    # Its lease expired (the worker died): sent again for a take-over.
    with engine.begin() as conn:
        conn.execute(
            update(Turn)
            .where(Turn.id == first)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    stuck = {t["id"] for t in json.loads(run("turns", "stuck", "--json").output)}
    assert first in stuck
    sent.clear()
    run("turns", "redispatch", str(first))
    assert sent == [("roomcast.turns.execute", [first])]


def test_show_of_a_completed_turn_lists_its_llm_call(app, client, user, make_agent, celery_worker):
    session = start_session(client, user, agent=make_agent(user))
    turn = post_turn(client, user, session["id"], "hello").json
    assert wait_done(client, user, turn["id"])["status"] == "completed"
    result = app.test_cli_runner().invoke(args=["turns", "show", str(turn["id"]), "--json"])
    events = [e["event"] for e in json.loads(result.output)["timeline"]]
    assert events[:3] == ["accepted", "step 0: user", "started"] and events[-1] == "completed"
    assert "step 1: LLM call (attempt 1)" in events and "step 1: assistant" in events
    refused = app.test_cli_runner().invoke(args=["turns", "redispatch", str(turn["id"])])
    assert refused.exit_code == 1 and "completed" in refused.output


def test_users_list_tokens_and_revoke(run, make_user, held_client):
    user = make_user()
    assert user.email in run("users", "list").output
    tokens = run("users", "tokens", user.email).output.splitlines()
    assert len(tokens) == 1 and tokens[0].endswith("live") and user.token not in tokens[0]
    token_id = tokens[0].split("\t")[0]
    assert held_client.get("/api/v1/auth/me", headers=user.headers).status_code == 200
    run("users", "revoke-token", user.email, token_id)
    assert run("users", "tokens", user.email).output.strip().endswith("revoked")
    assert "no token" in run("users", "revoke-token", user.email, "999999999", ok=False).output
    assert "no user" in run("users", "tokens", "nobody@example.com", ok=False).output
