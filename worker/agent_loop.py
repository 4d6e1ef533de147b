"""One agent's turn to speak: its LLM calls and the tools it calls in between.

    call ─▶ tool calls? ─yes─▶ run them ─▶ results ─▶ call ─▶ ... ─▶ reply
                      └─no──▶ reply

- The model is offered the tools of its agent's allow-list that this server has; the
  dispatcher (worker/tools) checks the allow-list again, as it is at call time, before running
  anything.
- A speaker takes at most ``Settings.max_tool_rounds`` tool rounds in a turn; after that its
  next call offers no tools, so it must answer, and the turn ends with ``stop_reason:
  max_tool_rounds``.
- The model's tool calls and their results are messages private to the speaker (visibility
  ``private``, its ``agent_id``); only its reply is shared. Each is a step of the turn, written
  with the same fence as a reply, so a redelivered or taken-over turn never makes a recorded
  call again nor writes a result twice (worker/recording.py).
- Providers without function calling (``tool_calling = "text"``, the built-in local model) get
  the documented text trigger instead: a user message ``search: ...`` or ``search for ...``
  runs ``search`` for a speaker allowed to, before its first call, and the model reads the
  results as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Agent, Message, metrics
from models.providers import TEXT_TOOL_CALLING
from models.settings import Settings
from models.tools import SEARCH

from . import db
from .chat_rules import conform
from .claiming import TurnRun
from .context import Speaker
from .providers.base import ChatMessage, Completion, ToolCall, ToolSpec
from .recording import message_row
from .tools import ToolContext, ToolOutcome, dispatch, offered_specs
from .tools.dispatch import TOOL_UNKNOWN

# What a text trigger looks like: "search: budget 2026", "Search for the budget".
TEXT_TRIGGER = re.compile(r"^\s*search(?:\s*:\s*|\s+for\s+)(?P<query>\S.*)", re.I | re.S)
MAX_TRIGGER_QUERY = 500
RUNNING_TOOL = "running"


@dataclass(frozen=True)
class Call:
    """One LLM call, prepared in a step transaction and made outside any."""

    step: int
    speaker: Speaker
    messages: list[ChatMessage]
    index: int | None  # the speakers entry it answers for; None for a supervisor's pick
    tools: list[ToolSpec] | None = None  # offered to the model
    tools_withheld: bool = False  # the speaker used its tool rounds: it must answer now


@dataclass(frozen=True)
class ToolRound:
    """Tool calls to run for speakers entry ``index``; their results are written from
    ``step``. A triggered round's call (the text trigger) is written with its results."""

    step: int
    speaker: Speaker
    index: int
    calls: list[ToolCall]
    triggered: bool = False


def prepare(
    s: Session,
    run: TurnRun,
    settings: Settings,
    speaker: Speaker,
    entry: dict[str, Any],
    index: int,
    step: int,
    context: Callable[[], list[ChatMessage]],
) -> Call | ToolRound:
    """The speaker's next call, or the tool round it has to run first: one whose calls were
    recorded but whose results were not (an attempt died in between), or a text trigger's."""
    text_mode = _tool_calling(settings, speaker) == TEXT_TOOL_CALLING
    if any(c["status"] == RUNNING_TOOL for c in entry.get("tool_calls", ())):
        if "call_message_id" not in entry:  # a trigger's call: written with its results
            return ToolRound(step, speaker, index, [_triggered_call(run, index)], triggered=True)
        recorded = s.scalar(
            select(_messages.c.tool_calls).where(_messages.c.id == entry["call_message_id"])
        )
        calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in recorded or ()]
        return ToolRound(step, speaker, index, calls)
    rounds, limit = entry.get("tool_rounds", 0), settings.max_tool_rounds
    if text_mode:
        if rounds == 0 and limit > 0 and SEARCH in speaker.tools and _trigger(run.content):
            call = _triggered_call(run, index)
            start_round(entry, [call])
            return ToolRound(step, speaker, index, [call], triggered=True)
        return Call(step, speaker, conform(as_text(context())), index)
    offered = offered_specs(speaker.tools)
    if not offered:
        return Call(step, speaker, context(), index)
    if rounds < limit:
        return Call(step, speaker, context(), index, tools=offered)
    return Call(step, speaker, context(), index, tools_withheld=rounds > 0)


_messages = Message.__table__


def _tool_calling(settings: Settings, speaker: Speaker) -> str | None:
    config = settings.providers().get(speaker.provider)
    return config.tool_calling if config is not None else None


def _trigger(content: str) -> str | None:
    match = TEXT_TRIGGER.match(content)
    return match["query"].strip()[:MAX_TRIGGER_QUERY] if match else None


def _triggered_call(run: TurnRun, index: int) -> ToolCall:
    # Derived from the turn alone, so an attempt resuming the round makes the same call.
    arguments = json.dumps({"query": _trigger(run.content) or ""})
    return ToolCall(f"call_trigger_{run.turn_id}_{index}", SEARCH, arguments)


def start_round(entry: dict[str, Any], calls: list[ToolCall]) -> None:
    """The speakers entry's progress once a round of ``calls`` is decided: pollers see them."""
    entry["tool_rounds"] = entry.get("tool_rounds", 0) + 1
    entry["tool_calls"] = [{"id": c.id, "name": c.name, "status": RUNNING_TOOL} for c in calls]


def answer(
    call: Call, completion: Completion, entry: dict[str, Any]
) -> tuple[dict[str, Any], list[ToolCall]]:
    """The message recording the model's answer, and the tool calls to run (none: a reply)."""
    calls = completion.tool_calls if call.tools else []
    metadata: dict[str, Any] = {"finish_reason": completion.finish_reason}
    message = dict(
        role="assistant",
        agent_id=call.speaker.id,
        visibility="private" if calls else "shared",
        content=completion.content,
        metadata=metadata,
    )
    if calls:
        start_round(entry, calls)
        message["tool_calls"] = [_as_json(c) for c in calls]
    elif completion.tool_calls:  # not offered (or no longer): never run
        metadata["ignored_tool_calls"] = [c.name for c in completion.tool_calls]
    return message, calls


def run_tools(run: TurnRun, round_: ToolRound) -> list[ToolOutcome]:
    """Dispatch the round's calls, each against the agent's allow-list as it is now."""
    with db.session() as s:
        row = s.execute(
            select(Agent.tools, Agent.deleted_at).where(Agent.id == round_.speaker.id)
        ).one_or_none()
    allowed = tuple(row.tools or ()) if row is not None and row.deleted_at is None else ()
    context = ToolContext(
        user_id=run.user_id,
        session_id=run.session_id,
        turn_id=run.turn_id,
        agent_id=round_.speaker.id,
        before_message_id=run.input_message_id,
    )
    outcomes = [dispatch(call, allowed, context) for call in round_.calls]
    for outcome in outcomes:
        # A model can name any tool: unknown names are counted under one label.
        name = "<unknown>" if outcome.status == TOOL_UNKNOWN else outcome.call.name
        metrics.TOOL_CALLS.labels(name, outcome.status).inc()
    return outcomes


def round_messages(
    run: TurnRun, round_: ToolRound, outcomes: list[ToolOutcome], entry: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """The messages recording a round's results (after a triggered call), and the next step;
    the entry's progress shows each call's outcome."""
    agent_id, step, rows = round_.speaker.id, round_.step, []
    if round_.triggered:
        rows.append(
            message_row(
                run,
                step,
                role="assistant",
                agent_id=agent_id,
                visibility="private",
                content="",
                tool_calls=[_as_json(c) for c in round_.calls],
                metadata={"trigger": "text"},
            )
        )
        step += 1
    for outcome in outcomes:
        rows.append(
            message_row(
                run,
                step,
                role="tool",
                agent_id=agent_id,
                visibility="private",
                content=outcome.content,
                tool_call_id=outcome.call.id,
                metadata=outcome.metadata,
            )
        )
        step += 1
    entry["tool_calls"] = [
        {"id": o.call.id, "name": o.call.name, "status": o.status} for o in outcomes
    ]
    return rows, step


def as_text(messages: list[ChatMessage]) -> list[ChatMessage]:
    """A context for a model without function calling: tool calls go, their results become
    text the model reads (``[search result]: ...``)."""
    names: dict[str, str] = {}
    out: list[ChatMessage] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            names.update((c.id, c.name) for c in m.tool_calls)
            if m.content:
                out.append(ChatMessage(role="assistant", content=m.content))
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", "tool")
            out.append(ChatMessage(role="user", content=f"[{name} result]: {m.content}"))
        else:
            out.append(m)
    return out


def _as_json(call: ToolCall) -> dict[str, str]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}
