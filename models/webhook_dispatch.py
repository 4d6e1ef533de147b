"""Handing a turn's webhook delivery to the broker once the turn's end is committed.

The statements that end a turn (models.lifecycle) write its webhook's due time in the same
UPDATE and note the turn on the session (``Session.info``). Sessions of a sessionmaker given to
``send_after_commit`` (the API's, the worker's) send those deliveries right after the commit.
Nothing rests on that send: if it fails, or the process dies first, the webhook sweep sends
every delivery that is due (worker/maintenance.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from .tasking import DELIVER_WEBHOOK, PUBLISH_RETRY_POLICY, WEBHOOKS_QUEUE
from .turns import WEBHOOK_PENDING

log = logging.getLogger(__name__)

_DUE = "roomcast.webhooks_due"


class TaskSender(Protocol):
    def send_task(self, name: str, args: list, **options): ...


def note_due(db: Session, turn_id: int, webhook_status: str | None) -> None:
    """The turn just ended in ``db``'s transaction: its webhook, if any, is due after it."""
    if webhook_status == WEBHOOK_PENDING:
        db.info.setdefault(_DUE, []).append(turn_id)


def send_deliveries(
    sender: TaskSender, due: Iterable[tuple[int, int]], countdown: float | None = None
) -> None:
    """Send the delivery task of each (turn id, attempts made so far). A send that fails is left
    to the webhook sweep."""
    for turn_id, attempts in due:
        try:
            sender.send_task(
                DELIVER_WEBHOOK,
                args=[turn_id, attempts],
                queue=WEBHOOKS_QUEUE,
                countdown=countdown,
                ignore_result=True,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        except Exception:  # any broker failure: the sweep sends it
            log.warning("webhook of turn %s: not sent now (the sweep will)", turn_id)


def send_after_commit(maker: sessionmaker, sender_of: Callable[[], TaskSender | None]) -> None:
    """Sessions of ``maker`` send the deliveries their transaction made due, after its commit
    (with ``sender_of()``; None: left to the sweep)."""

    @event.listens_for(maker, "after_commit")
    def _send(session: Session) -> None:
        due = session.info.pop(_DUE, None)
        sender = sender_of() if due else None
        if sender is not None:
            send_deliveries(sender, [(turn_id, 0) for turn_id in due])

    @event.listens_for(maker, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop(_DUE, None)
