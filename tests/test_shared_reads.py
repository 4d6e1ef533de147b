"""The clients that a turn's end wakes share one read of it (api/turn_view.py)."""

from __future__ import annotations

import threading
import time

import pytest

from api.turn_view import shared_ended_turn_view, turn_json

WAITERS = 10


def _at_once(calls) -> list:
    """Run the calls in threads, the first ahead of the others; their results in order."""
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    threads[0].start()
    time.sleep(0.05)  # the first is reading when the others arrive
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


class SlowRead:
    def __init__(self, status: str, fail: bool = False) -> None:
        self.status, self.fail, self.count = status, fail, 0

    def __call__(self) -> dict:
        self.count += 1
        time.sleep(0.3)
        if self.fail and self.count == 1:
            raise RuntimeError("the database went away")
        return {"id": 7, "status": self.status}


def test_the_waiters_of_an_ended_turn_share_one_read_and_one_serialisation(app):
    read = SlowRead("completed")
    views = _at_once([lambda: shared_ended_turn_view(7, 1, read)] * WAITERS)
    assert read.count == 1
    assert all(view is views[0] for view in views)
    with app.app_context():
        assert turn_json(views[0]) is turn_json(views[-1])
    # Once that read is over, the next waiter reads afresh.
    assert shared_ended_turn_view(7, 1, read) is not views[0]
    assert read.count == 2


def test_a_read_that_finds_the_turn_unfinished_is_not_shared():
    read = SlowRead("running")
    views = _at_once([lambda: shared_ended_turn_view(7, 1, read)] * WAITERS)
    assert read.count == WAITERS
    assert {view["status"] for view in views} == {"running"}


def test_another_user_or_turn_reads_for_itself():
    reads = [SlowRead("completed") for _ in range(3)]
    _at_once(
        [
            lambda: shared_ended_turn_view(7, 1, reads[0]),
            lambda: shared_ended_turn_view(7, 2, reads[1]),
            lambda: shared_ended_turn_view(8, 1, reads[2]),
        ]
    )
    assert [read.count for read in reads] == [1, 1, 1]


def test_when_the_shared_read_fails_the_others_read_for_themselves():
    read = SlowRead("completed", fail=True)
    calls = [lambda: shared_ended_turn_view(7, 1, read)] * 4

    def first():
        with pytest.raises(RuntimeError):
            calls[0]()
        return None

    views = _at_once([first, *calls[1:]])
    assert views[0] is None
    assert all(view["status"] == "completed" for view in views[1:])
    # The failed read, then one read per waiter or one shared among them: never a lost answer.
    assert 2 <= read.count <= 4
