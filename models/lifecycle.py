"""Turn state transitions, shared by the API (accept, cancel) and the worker (claim, finish).

    pending ──▶ queued ──▶ running ──▶ completed | failed | cancelled
       │           │          │  ▲
       └───────────┴──────────┴──┘ cancelled (by the user, or superseded by `interrupt`)
                              └─▶ queued again when its lease expired (the worker died)

- ``pending``: accepted behind the session's active turn (multitask policy ``enqueue``).
- ``queued`` / ``running`` are *active*; a partial unique index allows one per session.
- Every transition is a conditional UPDATE, so two actors racing on one turn cannot both win.
- Whenever a turn leaves the active states, the session's oldest pending turn is promoted to
  ``queued`` in the same transaction; the caller dispatches it after committing.
- Every decision about a session's active and pending turns (accepting a turn, ending one,
  promoting the next) first locks the session row, so a turn accepted as pending while the
  active one ends is never left waiting behind nothing. The session lock is always taken
  before any turn row lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import (
    Boolean,
    Row,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from .base import UTCDateTime, utcnow
from .db import lock_row
from .sessions import ChatSession
from .tasking import EXECUTE_TURN, TURNS_QUEUE
from .turns import (
    ACTIVE_STATUSES,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    WEBHOOK_PENDING,
    Turn,
)
from .webhook_dispatch import note_due

# How long a claimed turn is the claimer's. The worker renews it at every step, so it only has
# to outlast one LLM call; past it the reaper hands the turn to another worker.
DEFAULT_LEASE = timedelta(seconds=120)
# A queued turn no worker claims for this long fails with stop_reason "not_started" (no worker
# is consuming the turns queue), so no turn waits forever.
QUEUE_TIMEOUT = timedelta(hours=1)
# A turn is claimed at most this many times (first run plus take-overs) before it is failed.
MAX_ATTEMPTS = 3
# A queued turn whose task the broker should have delivered long ago is sent again (the broker
# lost it, or the process died between commit and send). Duplicate deliveries are no-ops.
REDISPATCH_AFTER = timedelta(minutes=5)


class TaskSender(Protocol):
    def send_task(self, name: str, args: list, **options): ...


def _update_turns():
    """An UPDATE of turns that leaves the session's loaded Turn objects as they are.

    SQLAlchemy's default (synchronize_session="auto") evaluates the WHERE clause against every
    loaded object to patch them, a quarter of a fenced UPDATE's cost measured here; callers
    that keep a Turn refresh it instead (see cancel).
    """
    return update(Turn).execution_options(synchronize_session=False)


def _webhook_due(now) -> case:
    """A pending webhook is due at the turn's end: written by the UPDATE that ends the turn (the
    outbox; NULL stays NULL for a turn without one)."""
    return case((Turn.__table__.c.webhook_status == WEBHOOK_PENDING, now))


def _ending(status: str, stop_reason: str, now: datetime) -> dict:
    """The columns every move to a terminal status sets."""
    return dict(
        status=status,
        stop_reason=stop_reason,
        completed_at=now,
        lease_expires_at=None,
        updated_at=now,
        webhook_next_attempt_at=_webhook_due(literal(now, UTCDateTime())),
    )


def active_turn(db: Session, session_id: int) -> Turn | None:
    return db.scalar(
        select(Turn).where(Turn.session_id == session_id, Turn.status.in_(ACTIVE_STATUSES))
    )


def lock_session(db: Session, session_id: int) -> None:
    lock_row(db, ChatSession, session_id)


def promote_next_pending(db: Session, session_id: int, now: datetime | None = None) -> int | None:
    """Make the session's oldest pending turn queued if none is active; returns its id.

    The caller holds the session lock (see lock_session).
    """
    if active_turn(db, session_id) is not None:
        return None
    return _promote_oldest_pending(db, session_id, now or utcnow())


def _promote_oldest_pending(db: Session, session_id: int, now: datetime) -> int | None:
    """Queue the session's oldest pending turn, knowing that none is active (one statement)."""
    return db.execute(_PROMOTE_OLDEST, {"of_session": session_id, "now": now}).scalar_one_or_none()


def cancel(
    db: Session, turn: Turn, *, stop_reason: str = "cancelled", promote: bool = True
) -> int | None:
    """Cancel a pending, queued or running turn at once (caller commits).

    A running turn's worker notices at its next step boundary: its writes are fenced on the turn
    still being ``running``, so it keeps what it wrote and adds nothing after this. Returns the id
    of a pending turn promoted in its place, to dispatch after the commit.
    """
    lock_session(db, turn.session_id)
    db.refresh(turn)
    now = utcnow()
    was_active = turn.status in ACTIVE_STATUSES
    result = db.execute(
        _update_turns()
        .where(Turn.id == turn.id, Turn.status.in_((PENDING, QUEUED, RUNNING)))
        .values(**_ending(CANCELLED, stop_reason, now), cancel_requested_at=now)
    )
    db.refresh(turn)
    if result.rowcount:
        note_due(db, turn.id, turn.webhook_status)
    if result.rowcount and was_active and promote:
        return promote_next_pending(db, turn.session_id, now)
    return None


# The UPDATEs every turn runs, built once and run with parameters: building an UPDATE cost
# about as much CPU as running it (still_mine 204 -> 115 us measured), and lifecycle statements
# were 40% of a worker's CPU per turn. On the table (Core): the ORM's bulk UPDATE path cost
# 230 us more per statement here, for objects none of them loads. Typed bind parameters, so the
# UTC datetime type converts them as it does for column values.
_t = Turn.__table__
_NOW = bindparam("now", type_=UTCDateTime())
_LEASE_UNTIL = bindparam("lease_until", type_=UTCDateTime())
# The fence of every write of a worker: the turn is running, and still this attempt's.
OWNED_BY_ATTEMPT = (
    _t.c.id == bindparam("turn_id"),
    _t.c.status == RUNNING,
    _t.c.attempt == bindparam("owner_attempt"),
)
# The columns of a step's reply on the turn: its progress, and its usage added to the totals.
STEP_VALUES = dict(
    progress=bindparam("new_progress", type_=_t.c.progress.type),
    prompt_tokens=_t.c.prompt_tokens + bindparam("add_prompt_tokens"),
    completion_tokens=_t.c.completion_tokens + bindparam("add_completion_tokens"),
    cost=_t.c.cost + bindparam("add_cost", type_=_t.c.cost.type),
)
CLAIM = (
    update(_t)
    .where(
        _t.c.id == bindparam("turn_id"),
        (_t.c.status == QUEUED) | ((_t.c.status == RUNNING) & (_t.c.lease_expires_at < _NOW)),
        _t.c.attempt < MAX_ATTEMPTS,
    )
    .values(
        status=RUNNING,
        attempt=_t.c.attempt + 1,
        lease_expires_at=_LEASE_UNTIL,
        started_at=func.coalesce(_t.c.started_at, _NOW),
        updated_at=_NOW,
    )
    .returning(_t.c.attempt)
)
_RENEWED = dict(lease_expires_at=_LEASE_UNTIL, updated_at=_NOW)
_RENEW_LEASE = update(_t).where(*OWNED_BY_ATTEMPT).values(**_RENEWED)
# The same for many turns at once: (id, attempt) pairs, the turns still running among them.
_RENEW_LEASES = (
    update(_t)
    .where(
        _t.c.status == RUNNING,
        tuple_(_t.c.id, _t.c.attempt).in_(bindparam("owned", expanding=True)),
    )
    .values(**_RENEWED)
    .returning(_t.c.id, _t.c.attempt)
)


_PROMOTE_OLDEST = (
    update(_t)
    .where(
        _t.c.id
        == select(_t.c.id)
        .where(_t.c.session_id == bindparam("of_session"), _t.c.status == PENDING)
        .order_by(_t.c.id)
        .limit(1)
        .scalar_subquery(),
        _t.c.status == PENDING,
    )
    .values(status=QUEUED, dispatched_at=_NOW, updated_at=_NOW)
    .returning(_t.c.id)
)


def _lease_params(lease: timedelta) -> dict:
    """``now`` and ``lease_until``, a lease from now, for the statements that take or renew one."""
    now = utcnow()
    return {"now": now, "lease_until": now + lease}


def claim_params(turn_id: int, lease: timedelta = DEFAULT_LEASE) -> dict:
    """The parameters of CLAIM."""
    return {"turn_id": turn_id, **_lease_params(lease)}


def claim(db: Session, turn_id: int, *, lease: timedelta = DEFAULT_LEASE) -> int | None:
    """Atomically take a queued turn (or one whose lease expired); returns the attempt number.

    None means someone else has it or it is finished: a duplicate delivery does nothing.
    """
    return db.execute(CLAIM, claim_params(turn_id, lease)).scalar_one_or_none()


def still_mine(
    db: Session, turn_id: int, attempt: int, *, lease: timedelta = DEFAULT_LEASE
) -> bool:
    """Renew the lease if this attempt still owns the running turn (the fence for every write).

    On PostgreSQL the UPDATE row-locks the turn until the caller commits, so a concurrent cancel
    is ordered strictly before or after the write it guards.
    """
    params = {"turn_id": turn_id, "owner_attempt": attempt, **_lease_params(lease)}
    return db.execute(_RENEW_LEASE, params).rowcount == 1


def renew_leases(
    db: Session, owned: Iterable[tuple[int, int]], *, lease: timedelta = DEFAULT_LEASE
) -> set[tuple[int, int]]:
    """still_mine for many (turn id, attempt) pairs in one statement: renews the leases of
    those still running in that attempt, and returns them (the others are no longer theirs)."""
    owned = list(owned)
    if not owned:
        return set()
    rows = db.execute(_RENEW_LEASES, {"owned": owned, **_lease_params(lease)})
    return {(turn_id, attempt) for turn_id, attempt in rows}


_FINISH = (
    update(_t)
    .where(*OWNED_BY_ATTEMPT)
    .values(
        status=bindparam("new_status"),
        stop_reason=bindparam("new_stop_reason"),
        error_code=bindparam("new_error_code"),
        error_message=bindparam("new_error_message"),
        completed_at=_NOW,
        lease_expires_at=None,
        updated_at=_NOW,
        webhook_next_attempt_at=_webhook_due(_NOW),
    )
    .returning(
        _t.c.id,
        _t.c.session_id,
        # Read by this statement, which runs once the session is locked (a statement reads as
        # of its start), so it sees every pending turn: none can be added until the commit.
        literal_column(
            "EXISTS (SELECT 1 FROM turns AS pending WHERE pending.session_id = turns.session_id"
            f" AND pending.status = '{PENDING}')",
            Boolean,
        ).label("has_pending"),
        _t.c.webhook_status,
    )
)
# Ending a turn with its last step's progress and usage (the parameters of STEP_VALUES too).
FINISH_WITH_STEP = _FINISH.values(**STEP_VALUES)


def finish(
    db: Session,
    turn_id: int,
    attempt: int,
    status: str,
    *,
    stop_reason: str,
    error_code: str | None = None,
    error_message: str | None = None,
    session_locked: bool = False,
    step: dict | None = None,
) -> tuple[bool, int | None]:
    """End a running turn owned by ``attempt``; returns (ended, promoted pending turn id).

    ``step``: the parameters of STEP_VALUES, to write a last step's progress and usage in the
    same UPDATE. ``session_locked``: the caller already holds the session's lock (taken before
    any turn row lock, see lock_session).
    """
    assert status in (COMPLETED, FAILED, CANCELLED)
    if not session_locked:
        session_id = db.scalar(select(Turn.session_id).where(Turn.id == turn_id))
        if session_id is None:
            return False, None
        lock_session(db, session_id)
    params = finish_params(turn_id, attempt, status, stop_reason, error_code, error_message)
    if step is None:
        result = db.execute(_FINISH, params)
    else:
        result = db.execute(FINISH_WITH_STEP, {**params, **step})
    return promote_after_finish(db, result.one_or_none(), params["now"])


def finish_params(
    turn_id: int,
    attempt: int,
    status: str,
    stop_reason: str,
    error_code: str | None = None,
    error_message: str | None = None,
) -> dict:
    """The parameters of the _FINISH statements."""
    return {
        "turn_id": turn_id,
        "owner_attempt": attempt,
        "new_status": status,
        "new_stop_reason": stop_reason,
        "new_error_code": error_code,
        "new_error_message": error_message,
        "now": utcnow(),
    }


def promote_after_finish(db: Session, ended: Row | None, now: datetime) -> tuple[bool, int | None]:
    """``ended``: what a _FINISH statement returned. Returns (ended, promoted pending turn id)."""
    if ended is None:
        return False, None
    note_due(db, ended.id, ended.webhook_status)
    # This was the session's active turn: no other can be active (one per session).
    if not ended.has_pending:
        return True, None
    return True, _promote_oldest_pending(db, ended.session_id, now)


def fail_unstarted(db: Session, turn_id: int, now: datetime) -> tuple[bool, int | None]:
    """Fail a turn still queued past QUEUE_TIMEOUT; returns (ended, promoted pending turn id)."""
    return end_unfinished(
        db,
        turn_id,
        FAILED,
        stop_reason="not_started",
        error_code="not_started",
        error_message="No worker started this turn in time; check that workers are running.",
        now=now,
        only=(Turn.status == QUEUED, Turn.updated_at < now - QUEUE_TIMEOUT),
    )


def end_unfinished(
    db: Session,
    turn_id: int,
    status: str,
    *,
    stop_reason: str,
    error_code: str | None = None,
    error_message: str | None = None,
    now: datetime | None = None,
    only: tuple = (),
) -> tuple[bool, int | None]:
    """End a pending, queued or running turn whoever holds it (caller commits); returns (ended,
    promoted pending turn id). ``only``: further conditions the turn must meet.

    A worker running it notices at its next step: its writes are fenced on the turn running.
    """
    session_id = db.scalar(select(Turn.session_id).where(Turn.id == turn_id))
    if session_id is None:
        return False, None
    lock_session(db, session_id)
    now = now or utcnow()
    was = db.scalar(select(Turn.status).where(Turn.id == turn_id))
    ended = db.execute(
        _update_turns()
        .where(Turn.id == turn_id, Turn.status.in_((PENDING, QUEUED, RUNNING)), *only)
        .values(
            **_ending(status, stop_reason, now), error_code=error_code, error_message=error_message
        )
        .returning(Turn.id, Turn.webhook_status)
    ).one_or_none()
    if ended is None:
        return False, None
    note_due(db, turn_id, ended.webhook_status)
    # A pending turn was not the active one: nothing takes its place.
    return True, _promote_oldest_pending(db, session_id, now) if was in ACTIVE_STATUSES else None


def dispatch(
    sender: TaskSender, sessionmaker, turn_ids: Iterable[int], **send_options
) -> list[int]:
    """Send the execute task for turns committed as dispatched; returns the ids that failed.

    A failed send clears ``dispatched_at`` so the outbox sweep sends it again soon; the turn is
    already accepted and is never lost.
    """
    failed = []
    for turn_id in turn_ids:
        try:
            # ignore_result: nobody reads the task's result (the turn row is the result). Without
            # it, Celery's Redis result backend subscribes the sender to the task's result
            # channel (and unsubscribes when the AsyncResult is collected): two Redis round
            # trips per turn on the request path, for nothing.
            sender.send_task(
                EXECUTE_TURN, args=[turn_id], queue=TURNS_QUEUE, ignore_result=True, **send_options
            )
        except Exception:  # any broker failure: leave it to the outbox sweep
            failed.append(turn_id)
    if failed:
        with sessionmaker() as db, db.begin():
            db.execute(
                _update_turns()
                .where(Turn.id.in_(failed), Turn.status == QUEUED)
                .values(dispatched_at=None)
            )
    return failed
