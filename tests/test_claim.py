"""Claiming a turn: one attempt at a time, loaded with the claim, failed if it cannot be planned."""

from dataclasses import replace

from models import Turn, lifecycle
from tests.helpers import post_turn, start_session


def _undispatched_turn(client, settings, user, make_agent, room=None) -> int:
    from api import create_app

    undispatched = create_app(
        replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True}
    )
    scope = {"room": room} if room is not None else {"agent": make_agent(user)}
    session = start_session(client, user, **scope)
    return post_turn(undispatched.test_client(), user, session["id"]).json["id"]


def test_a_claim_loads_the_turn_and_a_second_claim_gets_nothing(
    client, settings, user, make_agent, db
):
    from datetime import timedelta

    from worker.claiming import claim as _claim

    turn_id = _undispatched_turn(client, settings, user, make_agent)
    loaded = _claim(db, turn_id, timedelta(seconds=60))
    db.commit()
    turn = db.get(Turn, turn_id)
    assert (turn.status, turn.attempt, turn.progress) == ("running", 1, {})
    assert (loaded.attempt, loaded.user_id, loaded.session_id) == (1, user.id, turn.session_id)
    assert loaded.content == "hello"
    # Claimed: a second claim (a duplicate delivery) gets nothing and changes nothing.
    assert _claim(db, turn_id, timedelta(seconds=60)) is None
    assert lifecycle.claim(db, turn_id) is None
    db.commit()
    db.refresh(turn)
    assert (turn.status, turn.attempt) == ("running", 1)


def test_a_duplicate_delivery_of_a_finished_turn_does_nothing(
    client, settings, user, make_agent, db
):
    from worker.app import app as celery_app
    from worker.execution import execute_turn

    turn_id = _undispatched_turn(client, settings, user, make_agent)
    execute_turn(turn_id, settings, celery_app)
    db.expire_all()
    done = db.get(Turn, turn_id)
    assert done.status == "completed" and done.attempt == 1
    before = (done.updated_at, dict(done.progress))

    execute_turn(turn_id, settings, celery_app)
    db.expire_all()
    again = db.get(Turn, turn_id)
    assert (again.status, again.attempt, again.updated_at, again.progress) == (
        "completed",
        1,
        *before,
    )


def test_a_turn_that_cannot_be_planned_is_claimed_and_failed(
    client, settings, user, make_agent, make_room, db
):
    from worker.app import app as celery_app
    from worker.execution import execute_turn

    agent = make_agent(user)
    room = make_room(user, [agent])
    turn_id = _undispatched_turn(client, settings, user, make_agent, room=room)
    # The room lost its only agent after the turn was accepted: nothing can be planned.
    r = client.delete(f"/api/v1/rooms/{room.id}/agents/{agent.id}", headers=user.headers)
    assert r.status_code == 204

    execute_turn(turn_id, settings, celery_app)
    db.expire_all()
    turn = db.get(Turn, turn_id)
    assert (turn.status, turn.stop_reason, turn.error_code, turn.attempt) == (
        "failed",
        "room_empty",
        "room_empty",
        1,
    )


def test_leases_are_renewed_in_one_statement_for_the_attempts_that_still_own_their_turns(
    client, settings, user, make_agent, db
):
    from datetime import timedelta

    from worker.claiming import claim as _claim
    from worker.leases import LeaseKeeper

    running, cancelled, taken_over = (
        _undispatched_turn(client, settings, user, make_agent) for _ in range(3)
    )
    for turn_id in (running, cancelled, taken_over):
        _claim(db, turn_id, timedelta(seconds=5))
    db.commit()
    r = client.post(f"/api/v1/turns/{cancelled}/cancel", headers=user.headers)
    assert r.status_code == 200
    ids = [running, cancelled, taken_over]
    claimed_until = db.get(Turn, running).lease_expires_at

    # The attempt the keeper holds for taken_over is not the turn's: another worker has it.
    owned = {(running, 1), (cancelled, 1), (taken_over, 2)}
    assert lifecycle.renew_leases(db, owned, lease=timedelta(seconds=600)) == {(running, 1)}
    db.commit()
    db.expire_all()
    turns = {t.id: t for t in db.query(Turn).filter(Turn.id.in_(ids))}
    assert turns[running].lease_expires_at - claimed_until > timedelta(seconds=500)
    assert turns[cancelled].lease_expires_at is None and turns[cancelled].status == "cancelled"
    assert turns[taken_over].lease_expires_at - claimed_until < timedelta(seconds=60)
    assert lifecycle.renew_leases(db, []) == set()

    # The keeper renews what it holds and lets go of what is no longer its attempt's.
    keeper = LeaseKeeper()
    keeper._held = {t: (a, timedelta(seconds=900)) for t, a in owned}
    keeper.renew_all()
    assert keeper._held == {running: (1, timedelta(seconds=900))}
    db.expire_all()
    assert db.get(Turn, running).lease_expires_at - claimed_until > timedelta(seconds=800)
