"""The orchestration of a turn's speakers: who speaks next, and the chain of steps.

A turn is a chain of LLM calls (and tool rounds), and every transaction of it records one and
prepares the next (never held across a call)::

    claim and load, plan, prepare call 1 | call 1 | record 1, prepare 2 | call 2 | record 2, end

Preparing renews the worker's lease on the turn, fenced on its attempt number, checks the
budget, builds the speaker's context and marks it running; the first call is prepared right
after the claim. Recording (worker/recording.py) writes the call's message keyed by (turn,
step), its usage record, the turn's usage totals and progress; the last record also ends the
turn. So a cancelled or taken-over turn stops at the next step boundary, and a redelivered turn
resumes after the last step it committed, never writing one twice.

The progress (turns.progress) is the plan: ``speakers`` entries (agent, status, the reply's
message id, tool rounds and the running round's calls), in the order they speak.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from models import Agent, lifecycle, metrics
from models.settings import Settings
from models.turn_events import turn_events
from models.turns import COMPLETED, RUNNING

from . import agent_loop, leases, recording, token_stream
from .agent_loop import Call, ToolRound
from .budget import BudgetExceeded, check_budget
from .claiming import TurnFailure, TurnRun, speaker
from .context import Speaker, build_context
from .orchestration import (
    SELECTOR_DONE,
    last_speaker,
    mentioned,
    parse_pick,
    plan_speakers,
    selector_prompt,
)
from .providers import get_provider
from .providers.base import ChatMessage, Completion, ProviderError


@dataclass(frozen=True)
class Speak:
    """Next: the agent of speakers entry ``index`` answers."""

    index: int
    speaker: Speaker


SELECT = "select"  # next: the supervisor picks a speaker
MAX_TOOL_ROUNDS = "max_tool_rounds"  # the stop reason once a speaker was denied more tools

Step = Call | ToolRound


class Orchestrator:
    def __init__(self, run: TurnRun, settings: Settings, sender: lifecycle.TaskSender) -> None:
        self.run = run
        self.settings = settings
        self.sender = sender
        self.events = turn_events(settings.broker_url)

    # -- driving -----------------------------------------------------------------------------

    def start(self, s: Session) -> Step | str | TurnFailure:
        """Once claimed: plan the turn (unless resuming) and prepare its first step. Returns
        the step, or the stop reason when nothing is left to say, or the failure.

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
        if planned and (run.mode != "standalone" or isinstance(outcome, ToolRound)):
            s.execute(
                recording.WRITE_PLAN,
                {"turn_id": run.turn_id, "owner_attempt": run.attempt, "new_progress": progress},
            )
        run.progress = progress
        return outcome

    def drive(self, first: Step | str | TurnFailure) -> None:
        """Run the steps one after the other until the turn ends (raises if it fails)."""
        if isinstance(first, TurnFailure):
            raise first
        if isinstance(first, str):  # every step was written before: only the end is left
            run = self.run
            recording.end(
                run.turn_id,
                run.attempt,
                self.settings,
                self.sender,
                COMPLETED,
                first,
                session_id=run.session_id,
            )
            return
        run, lease = self.run, recording.lease_of(self.settings)
        step: Step | None = first
        with leases.keeper.holding(run.turn_id, run.attempt, lease):
            while step is not None:
                if isinstance(step, ToolRound):
                    step = self._run_tools(step)
                else:
                    step = self._record(step, self._call(step))

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

    def _entry(self, agent_id: int, round_: int = 1) -> dict[str, Any]:
        entry = {
            "agent_id": agent_id,
            "name": self.run.names[agent_id],
            "status": "pending",
            "message_id": None,
        }
        if self.run.mode == "mention":
            entry["round"] = round_
        return entry

    def _next(self, progress: dict[str, Any]) -> Speak | str:
        """What comes next: a speaker, SELECT, or the stop reason of a completed turn.

        Entries of agents removed from the room (or deleted) since the plan are skipped.
        """
        run = self.run
        by_id = {m.id: m for m in run.members}
        for index, entry in enumerate(progress["speakers"]):
            if entry["status"] in ("done", "skipped"):
                continue  # "running" means an earlier attempt died in the middle: redo it
            member = by_id.get(entry["agent_id"])
            if member is None:
                entry["status"] = "skipped"
                continue
            return Speak(index, member)
        if progress.get(MAX_TOOL_ROUNDS):
            return MAX_TOOL_ROUNDS
        if run.mode != "supervisor":
            return "completed"
        if progress.get("done"):
            return "selector_done"
        if len(progress["speakers"]) >= run.rounds:
            return "max_rounds"
        return SELECT

    def _follow_mentions(self, progress: dict[str, Any], index: int, reply: str) -> None:
        """Mention mode: members a reply addresses as @name speak in the next round (once
        each), up to max_rounds."""
        entry = progress["speakers"][index]
        next_round = entry.get("round", 1) + 1
        if next_round > self.run.rounds:
            return
        others = [(m.id, m.name) for m in self.run.members if m.id != entry["agent_id"]]
        queued = {e["agent_id"] for e in progress["speakers"] if e.get("round") == next_round}
        for agent_id in mentioned(reply, others):
            if agent_id not in queued:
                progress["speakers"].append(self._entry(agent_id, next_round))
                queued.add(agent_id)

    # -- step transactions -------------------------------------------------------------------

    def _prepared(
        self, s: Session, progress: dict[str, Any], upcoming: Speak | ToolRound | str, step: int
    ) -> Step | str | TurnFailure:
        """The upcoming step prepared, or the stop reason, or the failure to prepare it:
        returned, not raised, so that what the transaction writes is committed first."""
        if isinstance(upcoming, ToolRound):
            return upcoming
        if not (isinstance(upcoming, Speak) or upcoming == SELECT):
            return upcoming
        try:
            return self._prepare(s, progress, upcoming, step)
        except TurnFailure as exc:
            return exc

    def _prepare(self, s: Session, progress: dict[str, Any], upcoming: Speak | str, step: int):
        run = self.run
        try:
            check_budget(s, run.user_id, self.settings, run.user_settings)
        except BudgetExceeded as exc:
            raise TurnFailure("budget_exceeded", exc.message) from None
        if isinstance(upcoming, Speak):
            entry = progress["speakers"][upcoming.index]
            entry["status"] = "running"
            return agent_loop.prepare(
                s,
                run,
                self.settings,
                upcoming.speaker,
                entry,
                upcoming.index,
                step,
                lambda: self._context(s, upcoming.speaker),
            )
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
            turn_id=self.run.turn_id,
        )

    def _call(self, call: Call) -> Completion:
        config = self.settings.providers().get(call.speaker.provider)
        if config is None:
            raise TurnFailure(
                "llm_provider_unknown",
                f"Agent {call.speaker.name!r} uses provider {call.speaker.provider!r}, which this"
                " server does not know (any more).",
            )
        streaming = {}
        run = self.run
        # A speaker's calls only (a supervisor's pick is no reply), and only when asked.
        if call.index is not None and self.events.wants_tokens(run.turn_id, run.session_id):
            streaming["on_delta"] = token_stream.publisher(
                self.events, run, call.step, call.index, call.speaker
            )
        started = time.perf_counter()
        try:
            completion = get_provider(config).complete(
                call.messages,
                model=call.speaker.model,
                tools=call.tools,
                temperature=call.speaker.temperature,
                max_tokens=call.speaker.max_tokens,
                **streaming,
            )
        except ProviderError as exc:
            metrics.observe_llm_call(
                config.name, call.speaker.model, exc.code, time.perf_counter() - started
            )
            raise
        usage = completion.usage
        metrics.observe_llm_call(
            completion.provider,
            completion.model,
            "ok",
            completion.latency_ms / 1000,
            usage.prompt_tokens,
            usage.completion_tokens,
            config.price(completion.model).cost(usage.prompt_tokens, usage.completion_tokens),
        )
        return completion

    def _record(self, call: Call, completion: Completion) -> Step | None:
        """One transaction: the call's usage, message and progress, then the next step prepared
        or, after the last one, the turn completed. Returns the next step, if any."""
        run = self.run
        progress = copy.deepcopy(run.progress)
        tool_calls = []
        if call.index is None:
            message = self._pick(progress, call.speaker, completion)
        else:
            entry = progress["speakers"][call.index]
            message, tool_calls = agent_loop.answer(call, completion, entry)
            if not tool_calls:
                entry["status"] = "done"
                entry.pop("tool_calls", None)
                if call.tools_withheld:
                    progress[MAX_TOOL_ROUNDS] = True
                if run.mode == "mention":
                    self._follow_mentions(progress, call.index, completion.content)
        upcoming: Speak | ToolRound | str = (
            ToolRound(call.step + 1, call.speaker, call.index, tool_calls)
            if tool_calls
            else self._next(progress)
        )
        goes_on = isinstance(upcoming, Speak | ToolRound) or upcoming == SELECT
        stop_reason = None if goes_on else upcoming
        usage = recording.usage_row(run, call.step, call.speaker, completion, self.settings)

        def written(progress: dict[str, Any], message_id: int) -> None:
            if call.index is not None:
                key = "call_message_id" if tool_calls else "message_id"
                progress["speakers"][call.index][key] = message_id
            recording.add_usage(progress, call.speaker, usage)

        outcome, promoted = recording.record_call(
            run,
            self.settings,
            speaker=call.speaker,
            reply=recording.message_row(run, call.step, **message),
            usage=usage,
            progress=progress,
            written=written,
            stop_reason=stop_reason,
            prepare_next=lambda s, p: self._prepared(s, p, upcoming, call.step + 1),
        )
        if stop_reason is not None:
            recording.announce_end(
                run.turn_id,
                self.settings,
                self.sender,
                promoted,
                COMPLETED,
                stop_reason,
                run.session_id,
            )
            return None
        return self._handed_on(outcome)

    def _run_tools(self, round_: ToolRound) -> Step | None:
        """Run a round's tool calls, then one transaction: their results, the progress, and
        the speaker's next call prepared (its context holds the results)."""
        outcomes = agent_loop.run_tools(self.run, round_)
        progress = copy.deepcopy(self.run.progress)
        entry = progress["speakers"][round_.index]
        rows, step = agent_loop.round_messages(self.run, round_, outcomes, entry)
        again = Speak(round_.index, round_.speaker)
        outcome = recording.record_messages(
            self.run,
            self.settings,
            rows,
            progress,
            lambda s, p: self._prepared(s, p, again, step),
        )
        return self._handed_on(outcome)

    def _handed_on(self, outcome: Step | str | TurnFailure | None) -> Step | None:
        """After a step's commit that prepared the next one: tell pollers, go on."""
        self.events.publish(self.run.turn_id, RUNNING, self.run.session_id)
        if isinstance(outcome, TurnFailure):
            raise outcome
        return outcome

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
                return speaker(agent)
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
