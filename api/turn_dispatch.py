"""Handing committed turns to the broker from the API."""

from __future__ import annotations

from collections.abc import Iterable

from models import lifecycle
from models.tasking import REQUEST_ID_TASK_HEADER

from .request_context import request_id
from .state import state

# A broker that is down must not hold the request for long: one quick retry, then the outbox
# sweep takes over (the turn is already committed, so it is never lost).
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}


def dispatch_after_commit(turn_ids: Iterable[int | None]) -> None:
    ids = [turn_id for turn_id in turn_ids if turn_id is not None]
    if ids:
        app_state = state()
        lifecycle.dispatch(
            app_state.celery,
            app_state.sessionmaker,
            ids,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
            # The worker's log lines for the turn carry the id of the request that sent it.
            headers={REQUEST_ID_TASK_HEADER: request_id()},
        )
