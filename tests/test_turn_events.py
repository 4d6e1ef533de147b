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
            announced = changed.changes(0.1)
            if announced and (not status or status[0] in announced):
                return announced
        return []

    # The in-process notifier, and Redis pub/sub through the listener thread when configured.
    for events in {TurnEvents(), turn_events(BROKER_URL)}:
        with events.watch(7) as changed:
            # (With Redis, the wake-up of every waiter when the listener subscribes may come
            # first: a change announcing no status.)
            assert "completed" in published(events, changed, "completed")
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


def test_a_session_watch_wakes_for_any_turn_of_its_session_and_follows_one():
    events = TurnEvents()
    with events.watch(session_id=3) as changed:
        events.publish(7, "running", session_id=3)
        assert changed.changes(0) == ["running"]
        events.publish(8, "running", session_id=4)  # another session's turn
        events.publish(7, "queued")  # announced without its session (the reaper)
        assert changed.changes(0) == []
        events.follow(changed, 7)
        events.publish(7, "queued")
        assert changed.changes(0) == ["queued"]
        assert events.waiter_count() == 2  # the session and the turn it follows
    assert events.waiter_count() == 0 and not events._waiters


def test_deltas_reach_only_the_watches_that_asked_for_them():
    events = TurnEvents()
    delta = {"type": "delta", "turn_id": 7, "step": 1, "text": "hi"}
    with events.watch(7) as plain, events.watch(7, deltas=True) as tokens:
        assert not events.wants_tokens(7, session_id=3)
        with events.asking_tokens(session_id=3):
            assert events.wants_tokens(7, session_id=3) and not events.wants_tokens(7)
        assert not events.wants_tokens(7, session_id=3)
        events.publish_delta(delta)
        assert tokens.changes(0) == [] and tokens.take_deltas() == [delta]
        assert plain.changes(0) == [] and plain.take_deltas() == []


def test_every_waiter_reads_again_when_the_listener_subscribes():
    """Notifications published while the Redis listener was not subscribed are lost: it wakes
    every waiter once it is (again), so a lost notification costs no more than a read."""
    events = TurnEvents("redis://127.0.0.1:1/5")  # never reached: the message is simulated
    events._ensure_listener = lambda: None
    with events.watch(7) as one, events.watch(session_id=3) as other:
        events._on_message({"type": "subscribe", "channel": events._channel.encode(), "data": 1})
        assert one.changes(0) == [None] and other.changes(0) == [None]
