"""Turn change notifications for long-polls (the in-process notifier; Redis fans out the same)."""

from models.turn_events import TurnEvents


def test_a_change_between_the_read_and_the_wait_still_wakes_the_waiter():
    events = TurnEvents()
    with events.watch(7) as changed:
        # The long-poll watches before it reads the turn, so a change committed after that
        # read but before the wait begins is not lost.
        events.publish(7)
        assert changed.wait(0)
        changed.clear()
        events.publish(8)  # another turn's change does not wake this waiter
        assert not changed.wait(0)
    assert not events._waiters  # the watch is removed with the block


def test_wait_times_out_without_a_change():
    assert TurnEvents().wait(7, 0.01) is False


def test_a_notification_carries_the_new_status_when_it_has_one():
    from models.turn_events import turn_events
    from tests.conftest import BROKER_URL

    def published(events, changed, *status) -> bool:
        for _ in range(50):  # the Redis listener may still be subscribing
            events.publish(7, *status)
            if changed.wait(0.1):
                changed.clear()
                return True
        return False

    # The in-process notifier, and Redis pub/sub through the listener thread when configured.
    for events in {TurnEvents(), turn_events(BROKER_URL)}:
        with events.watch(7) as changed:
            assert published(events, changed, "completed") and changed.status == "completed"
            assert published(events, changed) and changed.status is None
