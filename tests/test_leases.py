"""The lease keeper's thread (worker/leases.py): woken only when a turn needs an earlier beat."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from worker.leases import LeaseKeeper


class _CountingKeeper(LeaseKeeper):
    """Counts its thread's wake-ups and beats; its beats renew nothing (no turns exist)."""

    def __init__(self) -> None:
        super().__init__()
        self.beats: list[float] = []
        self.notified = 0
        notify = self._wake.notify

        def counting_notify(n: int = 1) -> None:
            self.notified += 1
            notify(n)

        self._wake.notify = counting_notify  # type: ignore[method-assign]

    def renew_all(self) -> None:
        self.beats.append(time.monotonic())


def _wait_until(check, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_turns_with_the_same_lease_do_not_wake_the_keeper():
    keeper, lease = _CountingKeeper(), timedelta(seconds=30)
    leaving = threading.Event()
    entered = []

    def hold(turn_id: int) -> None:
        with keeper.holding(turn_id, 1, lease):
            entered.append(turn_id)
            leaving.wait(5)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
        time.sleep(0.002)
    _wait_until(lambda: len(entered) == 50)
    leaving.set()
    for thread in threads:
        thread.join(5)
    assert keeper.notified == 0
    assert not keeper._held


def test_a_shorter_lease_wakes_the_keeper_for_an_earlier_beat():
    keeper = _CountingKeeper()
    release = threading.Event()

    def hold(turn_id: int, lease: timedelta) -> None:
        with keeper.holding(turn_id, 1, lease):
            release.wait(10)

    long_one = threading.Thread(target=hold, args=(1, timedelta(seconds=60)))
    long_one.start()
    _wait_until(lambda: keeper._waiting_for == timedelta(seconds=60))  # next beat in 20 s
    started = time.monotonic()
    short_one = threading.Thread(target=hold, args=(2, timedelta(seconds=0.3)))
    short_one.start()
    _wait_until(lambda: keeper.beats and keeper.beats[-1] > started)
    assert keeper.notified == 1
    assert keeper.beats[-1] - started < 1.0  # a third of 0.3 s, not of 60
    release.set()
    long_one.join(5)
    short_one.join(5)


def test_a_keeper_thread_that_dies_is_replaced_by_the_next_turn_held():
    class Failing(_CountingKeeper):
        def renew_all(self) -> None:
            super().renew_all()
            if len(self.beats) == 1:
                raise RuntimeError("the first beat fails")

    keeper, lease = Failing(), timedelta(seconds=0.15)
    with keeper.holding(1, 1, lease):
        _wait_until(lambda: keeper.beats)
        _wait_until(lambda: keeper._thread is None)  # died, and said so
        with keeper.holding(2, 1, lease):
            _wait_until(lambda: len(keeper.beats) >= 2)  # a new thread beats again
    _wait_until(lambda: keeper._thread is None)  # nothing held: it ends
