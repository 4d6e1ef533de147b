"""Long-polls without If-None-Match wait for a status change, not for any change."""

import threading
import time
from dataclasses import replace

from sqlalchemy import update

from models import Turn
from models.turn_events import turn_events
from tests.helpers import post_turn, start_session


def test_progress_changes_do_not_end_a_status_long_poll(client, settings, user, make_agent, db):
    from api import create_app

    # A turn that stays queued: its task never reached a broker.
    broken = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    session = start_session(client, user, agent=make_agent(user))
    turn_id = post_turn(broken.test_client(), user, session["id"]).json["id"]
    events = turn_events(settings.broker_url)

    def progress_then_cancel() -> None:
        time.sleep(0.3)
        db.execute(update(Turn).where(Turn.id == turn_id).values(progress={"step": 1}))
        db.commit()
        events.publish(turn_id)  # a change, but not of the status
        time.sleep(0.5)
        client.post(f"/api/v1/turns/{turn_id}/cancel", headers=user.headers)

    changer = threading.Thread(target=progress_then_cancel)
    changer.start()
    started = time.monotonic()
    r = client.get(f"/api/v1/turns/{turn_id}?wait=10", headers=user.headers)
    elapsed = time.monotonic() - started
    changer.join()
    assert r.status_code == 200
    assert r.json["status"] == "cancelled" and r.json["progress"] == {"step": 1}
    assert 0.7 < elapsed < 5
