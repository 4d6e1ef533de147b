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
