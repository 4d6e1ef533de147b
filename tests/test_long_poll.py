"""Long-polls without If-None-Match wait for a status change, not for any change."""

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import update

from models import Turn
from models.turn_events import turn_events
from tests.helpers import post_turn, start_session


def _queued_turn(client, settings, user, make_agent) -> int:
    """A turn that stays queued: its task never reached a broker."""
    from api import create_app

    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    return post_turn(broken.test_client(), user, session["id"]).json["id"]


def _get_while(client, user, path, changes):
    """GET ``path`` while ``changes`` runs in another thread; the response and its seconds."""
    changer = threading.Thread(target=changes)
    changer.start()
    started = time.monotonic()
    response = client.get(path, headers=user.headers)
    elapsed = time.monotonic() - started
    changer.join()
    return response, elapsed


def test_progress_changes_do_not_end_a_status_long_poll(client, settings, user, make_agent, db):
    turn_id = _queued_turn(client, settings, user, make_agent)
    events = turn_events(settings.broker_url)

    def progress_then_cancel() -> None:
        time.sleep(0.3)
        db.execute(update(Turn).where(Turn.id == turn_id).values(progress={"step": 1}))
        db.commit()
        events.publish(turn_id)  # a change, but not of the status
        time.sleep(0.5)
        client.post(f"/api/v1/turns/{turn_id}/cancel", headers=user.headers)

    r, elapsed = _get_while(client, user, f"/api/v1/turns/{turn_id}?wait=10", progress_then_cancel)
    assert r.status_code == 200
    assert r.json["status"] == "cancelled" and r.json["progress"] == {"step": 1}
    assert 0.7 < elapsed < 5


def test_until_terminal_waits_past_status_changes_for_the_end(
    client, settings, user, make_agent, db
):
    turn_id = _queued_turn(client, settings, user, make_agent)
    events = turn_events(settings.broker_url)

    def start_then_cancel() -> None:
        time.sleep(0.3)
        db.execute(update(Turn).where(Turn.id == turn_id).values(status="running"))
        db.commit()
        events.publish(turn_id, "running")  # a status change, but not the end
        time.sleep(0.3)
        events.publish(turn_id)  # a change that announces no status: the turn is read
        time.sleep(0.3)
        client.post(f"/api/v1/turns/{turn_id}/cancel", headers=user.headers)

    r, elapsed = _get_while(
        client, user, f"/api/v1/turns/{turn_id}?wait=10&until=terminal", start_then_cancel
    )
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert 0.9 < elapsed < 5
    assert "Retry-After" not in r.headers


def test_until_terminal_answers_with_the_turn_as_it_is_at_the_deadline(
    client, settings, user, make_agent
):
    turn_id = _queued_turn(client, settings, user, make_agent)
    started = time.monotonic()
    r = client.get(f"/api/v1/turns/{turn_id}?wait=0.5&until=terminal", headers=user.headers)
    assert r.status_code == 200 and r.json["status"] == "queued"
    assert 0.5 <= time.monotonic() - started < 3
    assert r.headers["Retry-After"] == "1"


def test_until_takes_change_or_terminal(client, settings, user, make_agent):
    turn_id = _queued_turn(client, settings, user, make_agent)
    r = client.get(f"/api/v1/turns/{turn_id}?wait=1&until=done", headers=user.headers)
    assert r.status_code == 422 and list(r.json["errors"]) == ["until"]


@pytest.mark.usefixtures("celery_worker")
def test_one_long_poll_until_terminal_sees_a_room_turn_through(client, user, make_agent, make_room):
    agents = [make_agent(user, "ann"), make_agent(user, "bob"), make_agent(user, "cy")]
    session = start_session(client, user, room=make_room(user, agents, mode="sequential"))
    turn_id = post_turn(client, user, session["id"]).json["id"]
    r = client.get(f"/api/v1/turns/{turn_id}?wait=20&until=terminal", headers=user.headers)
    assert r.status_code == 200 and r.json["status"] == "completed"
    assert len(r.json["message_ids"]) == 3
