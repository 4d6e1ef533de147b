"""Recording a turn's steps: each LLM call's usage and message, tool results, the end.

Every write is fenced on the attempt that claimed the turn (models.lifecycle.OWNED_BY_ATTEMPT)
and keyed by (turn, step), so a cancelled or taken-over attempt writes nothing more and a
redelivered turn never writes a step twice. A step's transaction also prepares what comes next
(a callback of the orchestrator), so that one commit records a call and hands on the turn.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from models import ChatSession, Message, Turn, UsageRecord, lifecycle, metrics, utcnow
from models.messages import WRITTEN_COLUMNS
from models.settings import Settings
from models.turn_events import turn_events
from models.turns import COMPLETED

from . import db
from .claiming import TurnRun
from .context import Speaker
from .providers.base import Completion

log = logging.getLogger(__name__)


class Superseded(Exception):
    """The turn was cancelled or taken over by another attempt: stop, write nothing more."""


_turns, _messages = Turn.__table__, Message.__table__
_session_t, _usage_t = ChatSession.__table__, UsageRecord.__table__

# The writes of every step, built once and run with parameters on the tables (Core): an ORM
# UPDATE built per call cost twice as much CPU as running a prebuilt one (773 -> 379 us here).
ADD_STEP = update(_turns).where(_turns.c.id == bindparam("turn_id")).values(lifecycle.STEP_VALUES)
# A room's plan, written right after the claim: fenced, as nothing else has locked the turn.
WRITE_PLAN = (
    update(_turns)
    .where(*lifecycle.OWNED_BY_ATTEMPT)
    .values(progress=lifecycle.STEP_VALUES["progress"])
)
_INSERT_USAGE = insert(_usage_t)
# A message of the worker's, written only if this attempt still owns the running turn, whose
# row it locks until the commit (as still_mine does): the fence and the write in one statement.
_OWNED = select(_turns.c.id).where(*lifecycle.OWNED_BY_ATTEMPT).with_for_update()


def _insert_own_message(columns: tuple[str, ...], prefix: str = ""):
    """The fenced INSERT; its parameters are the columns' names behind ``prefix``."""
    values = (bindparam(prefix + c, type_=_messages.c[c].type) for c in columns)
    return (
        insert(_messages)
        .from_select(columns, select(*values).where(_OWNED.exists()))
        .returning(_messages.c.id)
    )


INSERT_OWN_MESSAGE = _insert_own_message(WRITTEN_COLUMNS)

# The last step on PostgreSQL, in two statements instead of four. The first locks the session
# (before the turn's row, as every end of a turn does) and draws the reply's id, so that the
# progress can name it; the second records the call's usage, writes the reply if this attempt
# still owns the turn, and then ends the turn with the step's progress and usage: the end reads
# the session's pending turns after the lock, as lifecycle.finish does.
_LOCK_SESSION_DRAW_MESSAGE_ID = (
    select(func.nextval(func.pg_get_serial_sequence(_messages.name, "id")))
    .select_from(_session_t)
    .where(_session_t.c.id == bindparam("session_id"))
    .with_for_update()
)
_USAGE_COLUMNS = tuple(c.name for c in _usage_t.columns if c.name != "id")
_recorded_usage = (
    insert(_usage_t)
    .values({c: bindparam(f"usage_{c}", type_=_usage_t.c[c].type) for c in _USAGE_COLUMNS})
    .cte("usage")
)
_own_reply = _insert_own_message(("id", *WRITTEN_COLUMNS), prefix="reply_").cte("reply")
_END_WITH_OWN_REPLY = lifecycle.FINISH_WITH_STEP.add_cte(_recorded_usage, _own_reply).where(
    select(_own_reply.c.id).exists()
)

NO_USAGE = {"add_prompt_tokens": 0, "add_completion_tokens": 0, "add_cost": Decimal(0)}


def add_usage(progress: dict[str, Any], speaker: Speaker, usage: dict[str, Any]) -> None:
    """Per-agent usage totals on the turn (the supervisor's own calls under "supervisor");
    ``usage``: the call's usage record (usage_row)."""
    key = str(speaker.id) if speaker.id > 0 else "supervisor"
    totals = progress.setdefault("usage_by_agent", {}).setdefault(
        key,
        {
            "agent_id": speaker.id or None,
            "name": speaker.name,
            "calls": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost": "0",
        },
    )
    totals["calls"] += 1
    totals["prompt_tokens"] += usage["prompt_tokens"]
    totals["completion_tokens"] += usage["completion_tokens"]
    totals["cost"] = str(Decimal(totals["cost"]) + usage["cost"])


def _added(usage: dict[str, Any]) -> dict[str, Any]:
    """The STEP_VALUES parameters that add a call's usage record to the turn's totals."""
    return {
        "add_prompt_tokens": usage["prompt_tokens"],
        "add_completion_tokens": usage["completion_tokens"],
        "add_cost": usage["cost"],
    }


def usage_row(
    run: TurnRun, step: int, speaker: Speaker, completion: Completion, settings: Settings
) -> dict[str, Any]:
    usage = completion.usage
    price = settings.providers()[speaker.provider].price(completion.model)
    return dict(
        user_id=run.user_id,
        session_id=run.session_id,
        turn_id=run.turn_id,
        agent_id=speaker.id if speaker.id > 0 else None,
        room_id=run.room_id,
        step=step,
        attempt=run.attempt,
        provider=completion.provider,
        model=completion.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        latency_ms=completion.latency_ms,
        cost=price.cost(usage.prompt_tokens, usage.completion_tokens),
        created_at=utcnow(),
    )


def message_row(run: TurnRun, step: int, **fields: Any) -> dict[str, Any]:
    """The parameters of INSERT_OWN_MESSAGE for a message of this attempt at ``step``."""
    return {
        "session_id": run.session_id,
        "turn_id": run.turn_id,
        "step": step,
        "owner_attempt": run.attempt,
        "created_at": utcnow(),
        "tool_calls": None,
        "tool_call_id": None,
        "metadata": {},
        **fields,
    }


# prepare_next(s, progress) -> what comes next, prepared inside the step's transaction.
PrepareNext = Callable[[Session, dict[str, Any]], Any]
# written(progress, message_id): the progress once the step's message has its id.
Written = Callable[[dict[str, Any], int], None]


def record_call(
    run: TurnRun,
    settings: Settings,
    *,
    speaker: Speaker,
    reply: dict[str, Any],
    usage: dict[str, Any],
    progress: dict[str, Any],
    written: Written,
    stop_reason: str | None,
    prepare_next: PrepareNext,
) -> tuple[Any, int | None]:
    """One transaction recording an LLM call: its usage, its message ``reply`` (message_row),
    the progress; then, with ``stop_reason``, the end of the turn, or else what comes next.

    Returns (what prepare_next returned, a promoted pending turn to dispatch); raises
    Superseded when the attempt no longer owns the turn (the call's usage is still counted).
    """
    lease = lease_of(settings)
    last = stop_reason is not None
    outcome, promoted = None, None
    with db.session() as s, s.begin():
        if last and s.get_bind().dialect.name == "postgresql":
            mine, promoted = _end_with_reply(s, run, reply, usage, progress, written, stop_reason)
        else:
            if last:  # ending the turn locks the session, and before the turn's row
                lifecycle.lock_session(s, run.session_id)
            # The call was billed whatever happens to the turn: always record it.
            s.execute(_INSERT_USAGE, usage)
            message_id = None
            # Before a next step the lease is renewed; the last step only needs the fence.
            if last or lifecycle.still_mine(s, run.turn_id, run.attempt, lease=lease):
                message_id = s.execute(INSERT_OWN_MESSAGE, reply).scalar_one_or_none()
            mine = message_id is not None
            if mine:
                written(progress, message_id)
                if last:
                    _, promoted = lifecycle.finish(
                        s,
                        run.turn_id,
                        run.attempt,
                        COMPLETED,
                        stop_reason=stop_reason,
                        session_locked=True,
                        step={"new_progress": progress, **_added(usage)},
                    )
                else:
                    outcome = prepare_next(s, progress)
                    s.execute(
                        ADD_STEP,
                        {"turn_id": run.turn_id, "new_progress": progress, **_added(usage)},
                    )
        if not mine:  # superseded: the call's usage still counts on the turn
            progress = dict(s.scalar(select(Turn.progress).where(Turn.id == run.turn_id)) or {})
            if "speakers" not in progress:  # a standalone plan, written with its step
                progress = {**copy.deepcopy(run.progress), **progress}
            add_usage(progress, speaker, usage)
            s.execute(ADD_STEP, {"turn_id": run.turn_id, "new_progress": progress, **_added(usage)})
    if not mine:
        raise Superseded
    run.progress = progress
    return outcome, promoted


def record_messages(
    run: TurnRun,
    settings: Settings,
    rows: list[dict[str, Any]],
    progress: dict[str, Any],
    prepare_next: PrepareNext,
) -> Any:
    """One transaction writing messages that cost no LLM call (tool calls and results), the
    progress, and what comes next; raises Superseded if the attempt no longer owns the turn."""
    with db.session() as s, s.begin():
        if not lifecycle.still_mine(s, run.turn_id, run.attempt, lease=lease_of(settings)):
            raise Superseded
        for row in rows:
            if s.execute(INSERT_OWN_MESSAGE, row).scalar_one_or_none() is None:
                raise Superseded
        outcome = prepare_next(s, progress)
        s.execute(ADD_STEP, {"turn_id": run.turn_id, "new_progress": progress, **NO_USAGE})
    run.progress = progress
    return outcome


def _end_with_reply(
    s: Session,
    run: TurnRun,
    reply: dict[str, Any],
    usage: dict[str, Any],
    progress: dict[str, Any],
    written: Written,
    stop_reason: str,
) -> tuple[bool, int | None]:
    """The last step on PostgreSQL (see _END_WITH_OWN_REPLY): returns (mine, promoted)."""
    message_id = s.scalar(_LOCK_SESSION_DRAW_MESSAGE_ID, {"session_id": run.session_id})
    written(progress, message_id)
    params = lifecycle.finish_params(run.turn_id, run.attempt, COMPLETED, stop_reason)
    ended = s.execute(
        _END_WITH_OWN_REPLY,
        {
            **params,
            **{f"reply_{name}": value for name, value in reply.items()},
            "reply_id": message_id,
            "new_progress": progress,
            **_added(usage),
            **{f"usage_{name}": value for name, value in usage.items()},
        },
    ).one_or_none()
    return lifecycle.promote_after_finish(s, ended, params["now"])


def lease_of(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.turn_lease_seconds)


def end(
    turn_id: int,
    attempt: int,
    settings: Settings,
    sender: lifecycle.TaskSender,
    status: str,
    stop_reason: str,
    code: str | None = None,
    message: str | None = None,
    session_id: int | None = None,
) -> None:
    """End the turn in a transaction of its own (a failure, or nothing left to say)."""
    with db.session() as s, s.begin():
        ended, promoted = lifecycle.finish(
            s,
            turn_id,
            attempt,
            status,
            stop_reason=stop_reason,
            error_code=code,
            error_message=message,
        )
    announce_end(
        turn_id, settings, sender, promoted, status if ended else None, stop_reason, session_id
    )


def announce_end(
    turn_id: int,
    settings: Settings,
    sender: lifecycle.TaskSender,
    promoted: int | None,
    status: str | None,
    stop_reason: str,
    session_id: int | None = None,
) -> None:
    """After the commit that ended a turn (``status`` None: a cancel or take-over had);
    ``session_id`` wakes the session's streams too."""
    if promoted is not None:
        lifecycle.dispatch(sender, db.session, [promoted])
    turn_events(settings.broker_url).publish(turn_id, status, session_id)
    if status is not None:
        metrics.TURNS_ENDED.labels(status, stop_reason).inc()
        log.info("turn %s: %s (%s)", turn_id, status, stop_reason)
    else:
        log.info("turn %s: ended after a cancel or take-over", turn_id)
