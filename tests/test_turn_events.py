"""Turn change notifications for long-polls (the in-process notifier; Redis fans out the same)."""

import time

from models.turn_events import TurnEvents


def test_a_change_between_the_read_and_the_wait_still_wakes_the_waiter():
    events = TurnEvents()
    with events.watch(7) as changed:
        # The long-poll watches before it reads the turn, so a change committed after that
        # read but before the wait begins is not lost.
        events.publish(7)
        assert changed.changes(0) == [None]
        events.publish(8)  # another turn's change does not wake this waiter
        assert changed.changes(0) == []
    assert not events._waiters  # the watch is removed with the block


def test_a_watch_times_out_without_a_change():
    with TurnEvents().watch(7) as changed:
        started = time.monotonic()
        assert changed.changes(0.05) == []
        assert time.monotonic() - started >= 0.05


def test_a_notification_carries_the_new_status_when_it_has_one():
    from models.turn_events import turn_events
    from tests.conftest import BROKER_URL

    def published(events, changed, *status) -> list:
        for _ in range(50):  # the Redis listener may still be subscribing
            events.publish(7, *status)
            if announced := changed.changes(0.1):
                return announced
        return []

    # The in-process notifier, and Redis pub/sub through the listener thread when configured.
    for events in {TurnEvents(), turn_events(BROKER_URL)}:
        with events.watch(7) as changed:
            assert published(events, changed, "completed")[:1] == ["completed"]
            changed.changes(0.2)  # repeats of the first publish, if the listener caught them
            assert published(events, changed)[:1] == [None]
            changed.changes(0.2)
            events.publish(7, "running")
            events.publish(7, "completed")
            assert changed.changes(5) + changed.changes(0.2) == ["running", "completed"]


def test_notifications_stay_within_their_redis_database():
    import pytest

    from tests.conftest import BROKER_URL

    if not BROKER_URL.startswith("redis"):
        pytest.skip("pub/sub channels are a Redis matter")
    base, _, db = BROKER_URL.rpartition("/")
    ours = TurnEvents(BROKER_URL)
    neighbour = TurnEvents(f"{base}/{(int(db or 0) + 1) % 16}")
    with ours.watch(7) as changed:
        for _ in range(50):  # wait until the listener is subscribed
            ours.publish(7, "running")
            if changed.changes(0.1):
                break
        changed.changes(0.2)
        # Another deployment on the same server (another database) changes its turn 7.
        neighbour.publish(7, "completed")
        assert changed.changes(0.5) == []
        ours.publish(7, "completed")
        assert changed.changes(5) == ["completed"]
