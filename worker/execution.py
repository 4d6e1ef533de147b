"""Running one turn: claim it, let its agents speak step by step, end it.

A turn is a chain of LLM calls, and every transaction of it records one call and prepares the
next (never held across a call)::

    claim and load, plan, prepare call 1 | call 1 | record 1, prepare 2 | call 2 | record 2, finish

Preparing renews the worker's lease on the turn, fenced on its attempt number, checks the
budget, builds the speaker's context and marks it running; the first call is prepared right
after the claim, which also loads the turn (on PostgreSQL in the same statement), without a
transaction around them. Recording writes the reply as a message keyed by (turn, step), its
usage record, the turn's usage totals and progress; the last record also ends the turn. So a
standalone turn is a claim, a context read and one transaction, a cancelled or
taken-over turn stops at the next step boundary, and a redelivered turn resumes after the last
step it committed, never writing one twice.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from models import (
    Agent,
    ChatSession,
    Message,
    Room,
    RoomAgent,
    Turn,
    UsageRecord,
    User,
    lifecycle,
    utcnow,
)
from models.settings import Settings
from models.turn_events import turn_events
from models.turns import COMPLETED, FAILED, RUNNING

from . import db
from .budget import BudgetExceeded, check_budget
from .context import Speaker, build_context
from .orchestration import (
    SELECTOR_DONE,
    last_speaker,
    parse_pick,
    plan_speakers,
    selector_prompt,
)
from .providers import get_provider
from .providers.base import ChatMessage, Completion, ProviderError

log = logging.getLogger(__name__)


class Superseded(Exception):
    """The turn was cancelled or taken over by another attempt: stop, write nothing more."""


class TurnFailure(Exception):
    """A domain reason the turn cannot go on; ``code`` is shown to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_AGENT_FIELDS = (
    "id",
    "name",
    "provider",
    "model",
    "system_prompt",
    "temperature",
    "max_tokens",
    "tools",
)


def _speaker(agent: Agent) -> Speaker:
    return _speaker_of(*(getattr(agent, name) for name in _AGENT_FIELDS))


def _speaker_of(*values: Any) -> Speaker:
    """A Speaker from an agent's _AGENT_FIELDS values."""
    *fields, tools = values
    return Speaker(*fields, tools=tuple(tools or ()))


@dataclass
class TurnRun:
    """What one attempt knows about its turn, loaded once at the start."""

    turn_id: int
    attempt: int
    user_id: int
    session_id: int
    room_id: int | None
    content: str
    mode: str
    rounds: int
    options: dict[str, Any]
    instructions: str
    members: list[Speaker]
    last_step: int  # the last step written before this attempt (resuming)
    user_settings: dict[str, Any] | None
    progress: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def names(self) -> dict[int, str]:
        return {m.id: m.name for m in self.members}


# What an attempt needs to know about its turn, in one query: the turn, its session, the user's
# settings, the user's message, the last step written (by an earlier attempt, when resuming),
# and a standalone session's agent. Core on the tables: loading an Agent entity through the
# ORM cost more than the query.
_turns, _messages = Turn.__table__, Message.__table__
_session_t, _user_t, _agent_t = ChatSession.__table__, User.__table__, Agent.__table__
_written = _messages.alias("written")


def _loading(turn):
    """The load of ``turn``: the turns table, or the claim's RETURNING."""
    return select(
        turn.c.attempt,
        turn.c.user_id,
        turn.c.session_id,
        turn.c.progress,
        _session_t.c.room_id,
        _user_t.c.settings,
        _messages.c.content,
        select(func.max(_written.c.step))
        .where(_written.c.turn_id == turn.c.id)
        .correlate(turn)
        .scalar_subquery(),
        *(_agent_t.c[name] for name in _AGENT_FIELDS),
    ).select_from(
        turn.join(_session_t, _session_t.c.id == turn.c.session_id)
        .join(_user_t, _user_t.c.id == turn.c.user_id)
        .outerjoin(_messages, (_messages.c.turn_id == turn.c.id) & (_messages.c.step == 0))
        .outerjoin(_agent_t, _agent_t.c.id == _session_t.c.agent_id)
    )


_LOAD_TURN = _loading(_turns).where(_turns.c.id == bindparam("turn_id"))
# The claim and the load in one statement on PostgreSQL, the load reading the claimed row.
_CLAIM_AND_LOAD = _loading(
    lifecycle.CLAIM.returning(
        _turns.c.id, _turns.c.user_id, _turns.c.session_id, _turns.c.progress
    ).cte("claimed")
)


def _claim(s: Session, turn_id: int, lease: timedelta) -> Row | None:
    """Claim the turn; returns its load (a row of _loading), or None if it is not claimable
    (finished, running under another attempt's lease, or gone)."""
    if s.get_bind().dialect.name == "postgresql":
        return s.execute(_CLAIM_AND_LOAD, lifecycle.claim_params(turn_id, lease)).one_or_none()
    if lifecycle.claim(s, turn_id, lease=lease) is None:
        return None
    return s.execute(_LOAD_TURN, {"turn_id": turn_id}).one()


def _run_of(s: Session, turn_id: int, loaded: Row) -> TurnRun:
    """What the attempt that claimed the turn (``loaded``: _claim's row) needs to run it."""
    attempt, user_id, session_id, progress, room_id, user_settings, content, last, *agent = loaded
    common = dict(
        turn_id=turn_id,
        attempt=attempt,
        user_id=user_id,
        session_id=session_id,
        content=content or "",
        last_step=last or 0,
        user_settings=user_settings,
        progress=copy.deepcopy(progress or {}),
    )
    if agent[0] is not None:
        return TurnRun(
            room_id=None,
            mode="standalone",
            rounds=1,
            options={},
            instructions="",
            members=[_speaker_of(*agent)],
            **common,
        )
    room = s.get(Room, room_id)
    agents = s.scalars(
        select(Agent)
        .join(RoomAgent, RoomAgent.agent_id == Agent.id)
        .where(RoomAgent.room_id == room.id, Agent.deleted_at.is_(None))
        .order_by(RoomAgent.position, RoomAgent.agent_id)
    ).all()
    if not agents:
        raise TurnFailure("room_empty", f"Room {room.id} has no agents to answer.")
    return TurnRun(
        room_id=room.id,
        mode=room.mode,
        rounds=room.max_rounds,
        options=dict(room.orchestration or {}),
        instructions=room.instructions,
        members=[_speaker(a) for a in agents],
        **common,
    )


def _add_usage(progress: dict[str, Any], speaker: Speaker, usage: dict[str, Any]) -> None:
    """Per-agent usage totals on the turn (the supervisor's own calls under "supervisor");
    ``usage``: the call's usage record (_usage_row)."""
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


# The writes of every step, built once and run with parameters on the tables (Core): an ORM
# UPDATE built per call cost twice as much CPU as running a prebuilt one (773 -> 379 us here).
_ADD_STEP = update(_turns).where(_turns.c.id == bindparam("turn_id")).values(lifecycle.STEP_VALUES)
# A room's plan, written right after the claim: fenced, as nothing else has locked the turn.
_WRITE_PLAN = (
    update(_turns)
    .where(*lifecycle.OWNED_BY_ATTEMPT)
    .values(progress=lifecycle.STEP_VALUES["progress"])
)
_INSERT_USAGE = insert(UsageRecord.__table__)
# A reply, written only if this attempt still owns the running turn, whose row it locks until the
# commit (as still_mine does): the fence and the write in one statement.
_REPLY_COLUMNS = (
    "session_id",
    "turn_id",
    "step",
    "role",
    "agent_id",
    "visibility",
    "content",
    "metadata",
    "created_at",
)
_OWNED = select(_turns.c.id).where(*lifecycle.OWNED_BY_ATTEMPT).with_for_update()


def _insert_own_reply(columns: tuple[str, ...], prefix: str = ""):
    """The reply INSERT; its parameters are the columns' names behind ``prefix``."""
    values = (bindparam(prefix + c, type_=_messages.c[c].type) for c in columns)
    return (
        insert(_messages)
        .from_select(columns, select(*values).where(_OWNED.exists()))
        .returning(_messages.c.id)
    )


_INSERT_OWN_REPLY = _insert_own_reply(_REPLY_COLUMNS)

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
_usage_t = UsageRecord.__table__
_USAGE_COLUMNS = tuple(c.name for c in _usage_t.columns if c.name != "id")
_recorded_usage = (
    insert(_usage_t)
    .values({c: bindparam(f"usage_{c}", type_=_usage_t.c[c].type) for c in _USAGE_COLUMNS})
    .cte("usage")
)
_own_reply = _insert_own_reply(("id", *_REPLY_COLUMNS), prefix="reply_").cte("reply")
_END_WITH_OWN_REPLY = lifecycle.FINISH_WITH_STEP.add_cte(_recorded_usage, _own_reply).where(
    select(_own_reply.c.id).exists()
)


@dataclass(frozen=True)
class Speak:
    """Next: the agent of speakers entry ``index`` answers."""

    index: int
    speaker: Speaker


SELECT = "select"  # next: the supervisor picks a speaker


@dataclass(frozen=True)
class Call:
    """One LLM call, prepared in a step transaction and made outside any."""

    step: int
    speaker: Speaker
    messages: list[ChatMessage]
    index: int | None  # the speakers entry it answers for; None for a supervisor's pick


class Orchestrator:
    def __init__(self, run: TurnRun, settings: Settings, sender: lifecycle.TaskSender) -> None:
        self.run = run
        self.settings = settings
        self.sender = sender
        self.lease = timedelta(seconds=settings.turn_lease_seconds)
        self.events = turn_events(settings.broker_url)

    # -- driving -----------------------------------------------------------------------------

    def start(self, s: Session) -> Call | str | TurnFailure:
        """Once claimed: plan the turn (unless resuming) and prepare its first call. Returns the
        call, or the stop reason when nothing is left to say, or the failure.

        A room's new plan is written at once, so that pollers see who will speak; a standalone
        turn's (its one agent) is written with its step, a statement fewer.
        """
        run = self.run
        progress = copy.deepcopy(run.progress)
        planned = "speakers" not in progress
        if planned:
            if run.mode == "supervisor":
                progress = {"mode": "supervisor", "speakers": [], "done": False}
            else:
                speakers = [self._entry(agent_id) for agent_id in self._plan(s)]
                progress.update(mode=run.mode, speakers=speakers)
        outcome = self._prepared(s, progress, self._next(progress), run.last_step + 1)
        if planned and run.mode != "standalone":
            s.execute(
                _WRITE_PLAN,
                {"turn_id": run.turn_id, "owner_attempt": run.attempt, "new_progress": progress},
            )
        run.progress = progress
        return outcome

    def drive(self, first: Call | str | TurnFailure) -> None:
        """Make the calls one after the other until the turn ends (raises if it fails)."""
        if isinstance(first, TurnFailure):
            raise first
        if isinstance(first, str):  # every step was written before: only the end is left
            end(self.run.turn_id, self.run.attempt, self.settings, self.sender, COMPLETED, first)
            return
        call: Call | None = first
        while call is not None:
            call = self._record(call, self._call(call.speaker, call.messages))

    def _plan(self, s: Session) -> list[int]:
        run = self.run
        if run.mode == "standalone":
            return [run.members[0].id]
        previous = None
        if run.mode == "round_robin":
            previous = last_speaker(s, run.session_id, run.turn_id)
        return plan_speakers(
            run.mode,
            [m.id for m in run.members],
            rounds=run.rounds,
            content=run.content,
            names=run.names,
            previous_speaker=previous,
            default_agent_id=run.options.get("default_agent_id"),
        )

    def _entry(self, agent_id: int) -> dict[str, Any]:
        return {
            "agent_id": agent_id,
            "name": self.run.names[agent_id],
            "status": "pending",
            "message_id": None,
        }

    def _next(self, progress: dict[str, Any]) -> Speak | str:
        """What comes next: a speaker, SELECT, or the stop reason of a completed turn.

        Entries of agents removed from the room (or deleted) since the plan are skipped.
        """
        run = self.run
        by_id = {m.id: m for m in run.members}
        for index, entry in enumerate(progress["speakers"]):
            if entry["status"] in ("done", "skipped"):
                continue  # "running" means an earlier attempt died in the middle: redo it
            speaker = by_id.get(entry["agent_id"])
            if speaker is None:
                entry["status"] = "skipped"
                continue
            return Speak(index, speaker)
        if run.mode != "supervisor":
            return "completed"
        if progress.get("done"):
            return "selector_done"
        if len(progress["speakers"]) >= run.rounds:
            return "max_rounds"
        return SELECT

    # -- step transactions -------------------------------------------------------------------

    def _advance(
        self,
        s: Session,
        progress: dict[str, Any],
        upcoming: Speak | str,
        *,
        step: int,
        added: dict[str, Any],
    ) -> Call | str | TurnFailure:
        """Prepare the upcoming call as ``step``; write the progress and the ``added`` usage.

        The caller's transaction holds the fence.
        """
        outcome = self._prepared(s, progress, upcoming, step)
        s.execute(_ADD_STEP, {"turn_id": self.run.turn_id, "new_progress": progress, **added})
        self.run.progress = progress
        return outcome

    def _prepared(
        self, s: Session, progress: dict[str, Any], upcoming: Speak | str, step: int
    ) -> Call | str | TurnFailure:
        """The upcoming call prepared, or the stop reason, or the failure to prepare it:
        returned, not raised, so that what the transaction writes is committed first."""
        if not (isinstance(upcoming, Speak) or upcoming == SELECT):
            return upcoming
        try:
            return self._prepare(s, progress, upcoming, step)
        except TurnFailure as exc:
            return exc

    def _prepare(
        self, s: Session, progress: dict[str, Any], upcoming: Speak | str, step: int
    ) -> Call:
        run = self.run
        try:
            check_budget(s, run.user_id, self.settings, run.user_settings)
        except BudgetExceeded as exc:
            raise TurnFailure("budget_exceeded", exc.message) from None
        if isinstance(upcoming, Speak):
            messages = self._context(s, upcoming.speaker)
            progress["speakers"][upcoming.index]["status"] = "running"
            return Call(step, upcoming.speaker, messages, upcoming.index)
        selector = self._selector(s)
        members = [(m.id, m.name) for m in run.members]
        spoken = [e["name"] for e in progress["speakers"]]
        prompt = ChatMessage(role="system", content=selector_prompt(members, spoken))
        context = self._context(s, replace(selector, id=0))
        return Call(step, selector, [prompt, *context[1:]], None)

    def _context(self, s: Session, speaker: Speaker) -> list[ChatMessage]:
        return build_context(
            s,
            self.run.session_id,
            speaker,
            instructions=self.run.instructions,
            names=self.run.names,
            budget_tokens=self.settings.context_tokens,
        )

    def _call(self, speaker: Speaker, messages: list[ChatMessage]) -> Completion:
        config = self.settings.providers().get(speaker.provider)
        if config is None:
            raise TurnFailure(
                "llm_provider_unknown",
                f"Agent {speaker.name!r} uses provider {speaker.provider!r}, which this server "
                "does not know (any more).",
            )
        return get_provider(config).complete(
            messages,
            model=speaker.model,
            temperature=speaker.temperature,
            max_tokens=speaker.max_tokens,
        )

    def _record(self, call: Call, completion: Completion) -> Call | None:
        """One transaction: the call's usage, message and progress, then the next call prepared
        or, after the last one, the turn completed. Returns the next call, if any."""
        run = self.run
        progress = copy.deepcopy(run.progress)
        message = (
            self._pick(progress, call.speaker, completion)
            if call.index is None
            else dict(
                role="assistant",
                agent_id=call.speaker.id,
                visibility="shared",
                content=completion.content,
                metadata={"finish_reason": completion.finish_reason},
            )
        )
        if call.index is not None:
            progress["speakers"][call.index]["status"] = "done"
        upcoming = self._next(progress)
        last = not (isinstance(upcoming, Speak) or upcoming == SELECT)
        usage = completion.usage
        price = self.settings.providers()[call.speaker.provider].price(completion.model)
        cost = price.cost(usage.prompt_tokens, usage.completion_tokens)
        outcome: Call | str | TurnFailure | None = None
        promoted = None
        reply = dict(
            session_id=run.session_id,
            turn_id=run.turn_id,
            step=call.step,
            owner_attempt=run.attempt,
            created_at=utcnow(),
            **message,
        )
        usage_row = self._usage_row(call, completion, cost)
        added = _added(usage_row)
        with db.session() as s, s.begin():
            if last and s.get_bind().dialect.name == "postgresql":
                mine, promoted = self._end_with_reply(s, call, reply, usage_row, progress, upcoming)
            else:
                if last:  # ending the turn locks the session, and before the turn's row
                    lifecycle.lock_session(s, run.session_id)
                # The call was billed whatever happens to the turn: always record it.
                s.execute(_INSERT_USAGE, usage_row)
                message_id = None
                # Before a next step the lease is renewed; the last step only needs the fence.
                if last or lifecycle.still_mine(s, run.turn_id, run.attempt, lease=self.lease):
                    message_id = s.execute(_INSERT_OWN_REPLY, reply).scalar_one_or_none()
                mine = message_id is not None
                if mine:
                    self._step_written(progress, call, message_id, usage_row)
                    if last:
                        _, promoted = lifecycle.finish(
                            s,
                            run.turn_id,
                            run.attempt,
                            COMPLETED,
                            stop_reason=upcoming,
                            session_locked=True,
                            step={"new_progress": progress, **added},
                        )
                    else:
                        outcome = self._advance(
                            s, progress, upcoming, step=call.step + 1, added=added
                        )
            if not mine:  # superseded: the call's usage still counts on the turn
                progress = dict(s.scalar(select(Turn.progress).where(Turn.id == run.turn_id)) or {})
                if "speakers" not in progress:  # a standalone plan, written with its step
                    progress = {**copy.deepcopy(run.progress), **progress}
                _add_usage(progress, call.speaker, usage_row)
                s.execute(_ADD_STEP, {"turn_id": run.turn_id, "new_progress": progress, **added})
        if not mine:
            raise Superseded
        if last:
            _announce_end(run.turn_id, self.settings, self.sender, promoted, COMPLETED, upcoming)
            return None
        self.events.publish(run.turn_id, RUNNING)
        if isinstance(outcome, TurnFailure):
            raise outcome
        return outcome

    def _step_written(
        self, progress: dict[str, Any], call: Call, message_id: int, usage: dict[str, Any]
    ) -> None:
        """The progress after a step whose reply is ``message_id``: it names the reply and
        counts the call's ``usage``."""
        if call.index is not None:
            progress["speakers"][call.index]["message_id"] = message_id
        _add_usage(progress, call.speaker, usage)

    def _end_with_reply(
        self,
        s: Session,
        call: Call,
        reply: dict[str, Any],
        usage_row: dict[str, Any],
        progress: dict[str, Any],
        stop_reason: str,
    ) -> tuple[bool, int | None]:
        """The last step on PostgreSQL (see _END_WITH_OWN_REPLY): returns (mine, promoted)."""
        run = self.run
        message_id = s.scalar(_LOCK_SESSION_DRAW_MESSAGE_ID, {"session_id": run.session_id})
        self._step_written(progress, call, message_id, usage_row)
        params = lifecycle.finish_params(run.turn_id, run.attempt, COMPLETED, stop_reason)
        ended = s.execute(
            _END_WITH_OWN_REPLY,
            {
                **params,
                **{f"reply_{name}": value for name, value in reply.items()},
                "reply_id": message_id,
                "new_progress": progress,
                **_added(usage_row),
                **{f"usage_{name}": value for name, value in usage_row.items()},
            },
        ).one_or_none()
        return lifecycle.promote_after_finish(s, ended, params["now"])

    def _usage_row(self, call: Call, completion: Completion, cost: Decimal) -> dict[str, Any]:
        run, usage = self.run, completion.usage
        return dict(
            user_id=run.user_id,
            session_id=run.session_id,
            turn_id=run.turn_id,
            agent_id=call.speaker.id if call.speaker.id > 0 else None,
            room_id=run.room_id,
            step=call.step,
            attempt=run.attempt,
            provider=completion.provider,
            model=completion.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            latency_ms=completion.latency_ms,
            cost=cost,
            created_at=utcnow(),
        )

    def _pick(
        self, progress: dict[str, Any], selector: Speaker, completion: Completion
    ) -> dict[str, Any]:
        """Apply a supervisor's pick to the progress; returns its private note."""
        run = self.run
        members = [(m.id, m.name) for m in run.members]
        spoken = [e["name"] for e in progress["speakers"]]
        pick = parse_pick(completion.content, members)
        if pick is None:
            # An invalid pick: the first member who has not spoken yet, or the end.
            remaining = [m for m in run.members if m.name not in spoken]
            pick = remaining[0].id if remaining else SELECTOR_DONE
        if pick == SELECTOR_DONE:
            progress["done"] = True
            note = "The supervisor ended the turn."
        else:
            progress["speakers"].append(self._entry(pick))
            note = f"The supervisor chose {run.names[pick]} to speak next."
        return dict(
            role="system",
            agent_id=None,
            visibility="private",
            content=note,
            metadata={
                "kind": "selector",
                "reply": completion.content[:500],
                "selector_agent_id": selector.id or None,
            },
        )

    def _selector(self, s: Session) -> Speaker:
        options, settings = self.run.options, self.settings
        agent_id = options.get("selector_agent_id")
        if agent_id is not None:
            agent = s.get(Agent, agent_id)
            if agent is not None and agent.deleted_at is None:
                return _speaker(agent)
        provider = options.get("selector_provider") or settings.default_provider
        model = options.get("selector_model") or settings.providers()[provider].default_model
        return Speaker(
            id=0,
            name="supervisor",
            provider=provider,
            model=model,
            system_prompt="",
            temperature=0.0,
            max_tokens=16,
            tools=(),
        )


def end(
    turn_id: int,
    attempt: int,
    settings: Settings,
    sender: lifecycle.TaskSender,
    status: str,
    stop_reason: str,
    code: str | None = None,
    message: str | None = None,
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
    _announce_end(turn_id, settings, sender, promoted, status if ended else None, stop_reason)


def _announce_end(
    turn_id: int,
    settings: Settings,
    sender: lifecycle.TaskSender,
    promoted: int | None,
    status: str | None,
    stop_reason: str,
) -> None:
    """After the commit that ended a turn (``status`` None: a cancel or take-over had)."""
    if promoted is not None:
        lifecycle.dispatch(sender, db.session, [promoted])
    turn_events(settings.broker_url).publish(turn_id, status)
    if status is not None:
        log.info("turn %s: %s (%s)", turn_id, status, stop_reason)
    else:
        log.info("turn %s: ended after a cancel or take-over", turn_id)


def execute_turn(turn_id: int, settings: Settings, sender: lifecycle.TaskSender) -> None:
    """Claim and run a turn to its end. Safe to call twice: a second delivery does nothing."""
    lease = timedelta(seconds=settings.turn_lease_seconds)
    orchestrator: Orchestrator | None = None
    first: Call | str | TurnFailure | None = None
    start_error: Exception | None = None
    attempt = None
    # Claimed and loaded, then planned and the first call prepared: statements that need no
    # transaction around them (the claim is one, and the rest read or write the claimed turn).
    with db.claiming_session() as s, s.begin():
        loaded = _claim(s, turn_id, lease)  # if this fails, the task fails: the turn stays queued
        if loaded is not None:
            attempt = loaded.attempt
            try:
                orchestrator = Orchestrator(_run_of(s, turn_id, loaded), settings, sender)
                first = orchestrator.start(s)
            except Exception as exc:  # nothing could be planned: the error fails the turn below
                start_error = exc
    if attempt is None:
        log.info("turn %s: not claimable (finished, running elsewhere or gone); skipped", turn_id)
        return
    turn_events(settings.broker_url).publish(turn_id, RUNNING)
    log.info("turn %s: attempt %s started", turn_id, attempt)
    try:
        if start_error is not None:
            raise start_error
        orchestrator.drive(first)
        return
    except Superseded:
        log.info("turn %s: attempt %s superseded (cancelled or taken over)", turn_id, attempt)
        turn_events(settings.broker_url).publish(turn_id)
        return
    except (ProviderError, TurnFailure) as exc:  # both carry a client-facing code and message
        stop_reason, code, message = exc.code, exc.code, exc.message
    except SoftTimeLimitExceeded:
        stop_reason = code = "turn_timeout"
        message = "The turn ran longer than the worker's time limit."
    except Exception:
        log.exception("turn %s: attempt %s failed unexpectedly", turn_id, attempt)
        stop_reason = code = "internal_error"
        message = "The worker hit an unexpected error running this turn."
    end(turn_id, attempt, settings, sender, FAILED, stop_reason, code, message)
