"""Running one turn: claim it, let its agents speak step by step, end it.

Every step is one unit of work written atomically: an LLM call's reply (or a supervisor's pick)
as a message keyed by (turn, step), its usage record, the turn's usage totals and progress.
Before each LLM call the worker renews its lease on the turn, fenced on its attempt number, so
a cancelled or taken-over turn stops at the next step boundary and a redelivered turn resumes
after the last step it committed, never writing one twice. No transaction is held across an LLM
call.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import Agent, ChatSession, Message, Room, RoomAgent, Turn, UsageRecord, lifecycle
from models.settings import Settings
from models.turn_events import turn_events
from models.turns import COMPLETED, FAILED

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


def _speaker(agent: Agent) -> Speaker:
    return Speaker(
        id=agent.id,
        name=agent.name,
        provider=agent.provider,
        model=agent.model,
        system_prompt=agent.system_prompt,
        temperature=agent.temperature,
        max_tokens=agent.max_tokens,
        tools=tuple(agent.tools or ()),
    )


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
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> dict[int, str]:
        return {m.id: m.name for m in self.members}


def _load(s: Session, turn_id: int, attempt: int) -> TurnRun:
    turn = s.get(Turn, turn_id)
    session = s.get(ChatSession, turn.session_id)
    content = s.scalar(select(Message.content).where(Message.turn_id == turn_id, Message.step == 0))
    common = dict(
        turn_id=turn_id,
        attempt=attempt,
        user_id=turn.user_id,
        session_id=session.id,
        content=content or "",
        progress=copy.deepcopy(turn.progress or {}),
    )
    if session.agent_id is not None:
        agent = s.get(Agent, session.agent_id)
        return TurnRun(
            room_id=None,
            mode="standalone",
            rounds=1,
            options={},
            instructions="",
            members=[_speaker(agent)],
            **common,
        )
    room = s.get(Room, session.room_id)
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


def _add_usage(
    progress: dict[str, Any], speaker: Speaker, prompt: int, completion: int, cost: Decimal
) -> None:
    """Per-agent usage totals on the turn (the supervisor's own calls under "supervisor")."""
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
    totals["prompt_tokens"] += prompt
    totals["completion_tokens"] += completion
    totals["cost"] = str(Decimal(totals["cost"]) + cost)


class Orchestrator:
    def __init__(self, run: TurnRun, settings: Settings) -> None:
        self.run = run
        self.settings = settings
        self.lease = timedelta(seconds=settings.turn_lease_seconds)
        self.events = turn_events(settings.broker_url)

    # -- driving -----------------------------------------------------------------------------

    def execute(self) -> str:
        """Run the remaining steps; returns the stop reason of a completed turn."""
        if self.run.mode == "supervisor":
            return self._supervise()
        speakers = self.run.progress.get("speakers")
        if speakers is None:
            speakers = [self._entry(agent_id) for agent_id in self._plan()]
            self._save_progress({**self.run.progress, "mode": self.run.mode, "speakers": speakers})
        self._speak_pending()
        return "completed"

    def _plan(self) -> list[int]:
        run = self.run
        if run.mode == "standalone":
            return [run.members[0].id]
        previous = None
        if run.mode == "round_robin":
            with db.session() as s:
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

    def _speak_pending(self) -> None:
        by_id = {m.id: m for m in self.run.members}
        for index, entry in enumerate(self.run.progress["speakers"]):
            if entry["status"] in ("done", "skipped"):
                continue  # "running" means an earlier attempt died in the middle: redo it
            speaker = by_id.get(entry["agent_id"])
            if speaker is None:  # removed from the room or deleted since the plan was made
                self._update_entry(index, status="skipped")
                continue
            self._speak(index, speaker)

    def _supervise(self) -> str:
        run = self.run
        if "speakers" not in run.progress:
            self._save_progress({"mode": "supervisor", "speakers": [], "done": False})
        while True:
            self._speak_pending()
            if run.progress.get("done"):
                return "selector_done"
            if len(run.progress["speakers"]) >= run.rounds:
                return "max_rounds"
            self._select()

    # -- steps ---------------------------------------------------------------------------------

    def _begin_step(self, s: Session) -> int:
        """Fence and renew the lease, check the budget; returns the next step number."""
        if not lifecycle.still_mine(s, self.run.turn_id, self.run.attempt, lease=self.lease):
            raise Superseded
        try:
            check_budget(s, self.run.user_id, self.settings)
        except BudgetExceeded as exc:
            raise TurnFailure("budget_exceeded", exc.message) from None
        last = s.scalar(select(func.max(Message.step)).where(Message.turn_id == self.run.turn_id))
        return (last or 0) + 1

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

    def _commit_step(
        self,
        step: int,
        speaker: Speaker,
        completion: Completion,
        message: dict[str, Any],
        progress: dict[str, Any] | None,
    ) -> int | None:
        """Write the step's usage, and its message and progress if the turn is still ours."""
        run = self.run
        usage = completion.usage
        price = self.settings.providers()[speaker.provider].price(completion.model)
        cost = price.cost(usage.prompt_tokens, usage.completion_tokens)
        with db.session() as s, s.begin():
            # The call was billed whatever happens to the turn: always record it.
            s.add(
                UsageRecord(
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
                    cost=cost,
                )
            )
            mine = lifecycle.still_mine(s, run.turn_id, run.attempt, lease=self.lease)
            message_id = None
            if mine:
                row = Message(session_id=run.session_id, turn_id=run.turn_id, step=step, **message)
                s.add(row)
                s.flush()
                message_id = row.id
                if callable(progress):
                    progress = progress(message_id)
                progress = copy.deepcopy(progress if progress is not None else run.progress)
            else:
                progress = dict(s.scalar(select(Turn.progress).where(Turn.id == run.turn_id)) or {})
            _add_usage(progress, speaker, usage.prompt_tokens, usage.completion_tokens, cost)
            s.execute(
                update(Turn)
                .where(Turn.id == run.turn_id)
                .values(
                    prompt_tokens=Turn.prompt_tokens + usage.prompt_tokens,
                    completion_tokens=Turn.completion_tokens + usage.completion_tokens,
                    cost=Turn.cost + cost,
                    progress=progress,
                )
            )
        if not mine:
            raise Superseded
        run.progress = progress
        self.events.publish(run.turn_id)
        return message_id

    def _speak(self, index: int, speaker: Speaker) -> None:
        run = self.run
        with db.session() as s, s.begin():
            step = self._begin_step(s)
            messages = build_context(
                s,
                run.session_id,
                speaker,
                instructions=run.instructions,
                names=run.names,
                budget_tokens=self.settings.context_tokens,
            )
            # Marked running in the step's transaction, under the fence _begin_step took: a
            # transaction of its own cost a third of a standalone turn's worker time.
            running = self._entry_changed(index, status="running")
            s.execute(update(Turn).where(Turn.id == run.turn_id).values(progress=running))
        run.progress = running
        self.events.publish(run.turn_id)
        completion = self._call(speaker, messages)

        def progress(message_id: int) -> dict[str, Any]:
            updated = copy.deepcopy(run.progress)
            updated["speakers"][index].update(status="done", message_id=message_id)
            return updated

        self._commit_step(
            step,
            speaker,
            completion,
            message=dict(
                role="assistant",
                agent_id=speaker.id,
                visibility="shared",
                content=completion.content,
                meta={"finish_reason": completion.finish_reason},
            ),
            progress=progress,
        )

    def _selector(self) -> Speaker:
        options, settings = self.run.options, self.settings
        agent_id = options.get("selector_agent_id")
        if agent_id is not None:
            with db.session() as s:
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

    def _select(self) -> None:
        """One supervisor step: pick the next speaker (or end), recorded as a private note."""
        run = self.run
        selector = self._selector()
        members = [(m.id, m.name) for m in run.members]
        spoken = [e["name"] for e in run.progress["speakers"]]
        with db.session() as s, s.begin():
            step = self._begin_step(s)
            context = build_context(
                s,
                run.session_id,
                replace(selector, id=0),
                instructions=run.instructions,
                names=run.names,
                budget_tokens=self.settings.context_tokens,
            )
        prompt = ChatMessage(role="system", content=selector_prompt(members, spoken))
        completion = self._call(selector, [prompt, *context[1:]])
        pick = parse_pick(completion.content, members)
        if pick is None:
            # An invalid pick: the first member who has not spoken yet, or the end.
            remaining = [m for m in run.members if m.name not in spoken]
            pick = remaining[0].id if remaining else SELECTOR_DONE
        progress = copy.deepcopy(run.progress)
        if pick == SELECTOR_DONE:
            progress["done"] = True
            note = "The supervisor ended the turn."
        else:
            progress["speakers"].append(self._entry(pick))
            note = f"The supervisor chose {run.names[pick]} to speak next."
        self._commit_step(
            step,
            selector,
            completion,
            message=dict(
                role="system",
                agent_id=None,
                visibility="private",
                content=note,
                meta={
                    "kind": "selector",
                    "reply": completion.content[:500],
                    "selector_agent_id": selector.id or None,
                },
            ),
            progress=progress,
        )

    # -- progress ------------------------------------------------------------------------------

    def _save_progress(self, progress: dict[str, Any]) -> None:
        with db.session() as s, s.begin():
            if not lifecycle.still_mine(s, self.run.turn_id, self.run.attempt, lease=self.lease):
                raise Superseded
            s.execute(update(Turn).where(Turn.id == self.run.turn_id).values(progress=progress))
        self.run.progress = progress
        self.events.publish(self.run.turn_id)

    def _entry_changed(self, index: int, **changes: Any) -> dict[str, Any]:
        """A copy of the progress with speaker ``index``'s entry changed."""
        progress = copy.deepcopy(self.run.progress)
        progress["speakers"][index].update(changes)
        return progress

    def _update_entry(self, index: int, **changes: Any) -> None:
        self._save_progress(self._entry_changed(index, **changes))


def execute_turn(turn_id: int, settings: Settings, sender: lifecycle.TaskSender) -> None:
    """Claim and run a turn to its end. Safe to call twice: a second delivery does nothing."""
    lease = timedelta(seconds=settings.turn_lease_seconds)
    events = turn_events(settings.broker_url)
    run: TurnRun | None = None
    load_error: Exception | None = None
    with db.session() as s, s.begin():
        attempt = lifecycle.claim(s, turn_id, lease=lease)
        if attempt is not None:
            # Loaded in the claiming transaction (one transaction less per turn). A load error
            # must not undo the claim: it is raised below, where it fails the turn as before.
            try:
                run = _load(s, turn_id, attempt)
            except Exception as exc:
                load_error = exc
    if attempt is None:
        log.info("turn %s: not claimable (finished, running elsewhere or gone); skipped", turn_id)
        return
    events.publish(turn_id)
    log.info("turn %s: attempt %s started", turn_id, attempt)
    status, stop_reason, code, message = COMPLETED, "completed", None, None
    try:
        if load_error is not None:
            raise load_error
        stop_reason = Orchestrator(run, settings).execute()
    except Superseded:
        log.info("turn %s: attempt %s superseded (cancelled or taken over)", turn_id, attempt)
        events.publish(turn_id)
        return
    except (ProviderError, TurnFailure) as exc:  # both carry a client-facing code and message
        status, stop_reason, code, message = FAILED, exc.code, exc.code, exc.message
    except SoftTimeLimitExceeded:
        status, stop_reason, code = FAILED, "turn_timeout", "turn_timeout"
        message = "The turn ran longer than the worker's time limit."
    except Exception:
        log.exception("turn %s: attempt %s failed unexpectedly", turn_id, attempt)
        status, stop_reason, code = FAILED, "internal_error", "internal_error"
        message = "The worker hit an unexpected error running this turn."
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
    if promoted is not None:
        lifecycle.dispatch(sender, db.session, [promoted])
    events.publish(turn_id)
    if ended:
        log.info("turn %s: %s (%s)", turn_id, status, stop_reason)
    else:
        log.info("turn %s: attempt %s ended after a cancel or take-over", turn_id, attempt)
