"""Handing committed turns to the broker from the API."""

from __future__ import annotations

from collections.abc import Iterable

from models import lifecycle
from models.tasking import PUBLISH_RETRY_POLICY, REQUEST_ID_TASK_HEADER

from .request_context import request_id
from .state import state


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
