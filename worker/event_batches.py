"""Task events sent in batches by a gevent (or threads) worker, as a prefork worker sends them.

Celery's worker sends three task events per turn (received, started, succeeded) for Flower and
other monitors. With its event loop (prefork) it buffers them and publishes a list at a time
("task.multi", which every event receiver reads); without it (gevent, threads) it publishes each
one on its own, an eighth of a busy gevent worker's CPU. This consumer step turns the buffer on
there too: a batch goes out when it holds ``buffer_limit`` events (24) or at most
FLUSH_INTERVAL seconds after its first event, and whatever is left when the consumer stops.
Worker events (heartbeats, online/offline) are still sent at once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
TASK_GROUP = "task"


class BatchedTaskEvents(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.events:Events",)
    label = "Batched task events"

    def __init__(self, c, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer_entry: Any = None

    def start(self, c) -> None:
        dispatcher = c.event_dispatcher
        # With an event loop (c.hub) Celery already buffers; a disabled dispatcher sends nothing.
        if c.hub is not None or dispatcher is None or not dispatcher.enabled:
            return
        dispatcher.buffer_group = frozenset({TASK_GROUP})
        self._timer_entry = c.timer.call_repeatedly(FLUSH_INTERVAL, self._flush, (c,))

    def stop(self, c) -> None:
        # Before Events closes the dispatcher (steps stop in reverse order): nothing is lost on
        # a warm shutdown or a reconnection.
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        self._flush(c)

    shutdown = stop

    @staticmethod
    def _flush(c) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None or not dispatcher.enabled:
            return
        try:
            dispatcher.flush(errors=False)
        except Exception:  # a broker that is down: monitoring events are best effort
            log.warning("could not send the buffered task events", exc_info=True)
