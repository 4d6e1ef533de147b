"""What each agent sees: its private system prompt, the room's shared instructions, the shared
transcript with speakers named, and its own private items (tool calls and results).

Other agents' private items never enter an agent's context. Long histories are cut to a token
budget, newest kept, and a tool call is never separated from its results. The result is then
put in the shape strict chat templates accept (worker/chat_rules.py): other agents' replies are
user messages, merged with the user's, and an agent speaking again is asked for something new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from models import Message

from .chat_rules import FRAMING_TOKENS, conform
from .providers.base import (
    MESSAGE_OVERHEAD_TOKENS,
    ChatMessage,
    ToolCall,
    estimate_prompt_tokens,
    estimate_tokens,
)

# How far back the history query looks at most; the token budget usually cuts earlier.
MAX_HISTORY_MESSAGES = 400


@dataclass(frozen=True)
class Speaker:
    """A snapshot of an agent for one step (rows are not held across LLM calls)."""

    id: int
    name: str
    provider: str
    model: str
    system_prompt: str
    temperature: float | None
    max_tokens: int | None
    tools: tuple[str, ...]


def system_prompt(speaker: Speaker, instructions: str, others: list[str]) -> str:
    parts = [speaker.system_prompt.strip()] if speaker.system_prompt.strip() else []
    if others:
        parts.append(
            f"You are {speaker.name}, one of several agents in a shared conversation with a user."
            f" The other agents are: {', '.join(others)}. Their messages appear as"
            " '[Name]: text'. Answer only as yourself, without a name prefix."
        )
    if instructions.strip():
        parts.append(
            f"Room instructions (shared by every agent in the room):\n{instructions.strip()}"
        )
    return "\n\n".join(parts)


class HistoryItem(NamedTuple):
    """One message of a context: only the columns it needs (whole rows would also parse each
    message's metadata JSON and track hundreds of ORM objects per step, for nothing)."""

    id: int
    role: str
    agent_id: int | None
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None


# Built once, on the table: rebuilding it and going through the ORM for every step, then
# reading SQLAlchemy rows by attribute, was two thirds of a 400-message context's 9 ms here.
_messages = Message.__table__
_VISIBLE = (
    _messages.c.session_id == bindparam("session_id"),
    or_(
        _messages.c.visibility == "shared",
        (_messages.c.visibility == "private") & (_messages.c.agent_id == bindparam("speaker_id")),
    ),
)
# A turn sees the messages of the turns accepted before it, and its own: never those of turns
# accepted after it (queued behind it, or posted meanwhile), even when written before it ran.
_SO_FAR = _messages.c.turn_id <= bindparam("turn_id")
_VISIBLE_HISTORY = (
    select(*(_messages.c[name] for name in HistoryItem._fields))
    .where(*_VISIBLE, _SO_FAR)
    .order_by(_messages.c.id.desc())
    .limit(MAX_HISTORY_MESSAGES)
)


def visible_history(
    db: Session, session_id: int, speaker_id: int, turn_id: int
) -> Sequence[HistoryItem]:
    """The messages one agent may see in turn ``turn_id``, newest first: shared ones and its
    own private ones, of that turn and the ones before it (rows with HistoryItem's fields)."""
    params = {"session_id": session_id, "speaker_id": speaker_id, "turn_id": turn_id}
    return db.execute(_VISIBLE_HISTORY, params).all()


def _as_chat(message: HistoryItem, speaker_id: int, names: dict[int, str]) -> ChatMessage:
    _, role, agent_id, content, tool_calls, tool_call_id = message
    if role == "tool":
        return ChatMessage(role="tool", content=content, tool_call_id=tool_call_id)
    if role == "assistant" and agent_id == speaker_id:
        calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in tool_calls or ()]
        return ChatMessage(role="assistant", content=content, tool_calls=calls or None)
    if role == "assistant":
        return ChatMessage(role="user", content=_named(agent_id, names) + content)
    return ChatMessage(role="user", content=content)


def _named(agent_id: int | None, names: dict[int, str]) -> str:
    """The prefix naming another agent in the shared transcript."""
    return f"[{names.get(agent_id) or f'agent {agent_id}'}]: "


def fit_history(
    history: Sequence[HistoryItem], speaker_id: int, names: dict[int, str], budget_tokens: int
) -> list[ChatMessage]:
    """The newest messages of ``history`` (newest first) that fit the budget, oldest first.

    Messages are kept in units: an assistant tool call with the tool results that answer it, or
    one message. The newest unit is always kept, however long; the first unit that does not
    fit ends the context; tool results whose call was cut off by the history window go. One
    pass, newest first, costing messages from their rows as estimate_prompt_tokens would: only
    the kept ones are built (building all of a 300-message history was most of a step's CPU).
    """
    kept: list[HistoryItem] = []  # newest first
    remaining = budget_tokens
    results: list[tuple[HistoryItem, int]] = []  # tool results before their call is seen
    for item in history:
        _, role, agent_id, content, tool_calls, _ = item
        text = content or ""
        if role == "assistant" and agent_id != speaker_id:
            text = _named(agent_id, names) + text
        cost = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(text)
        if role == "tool":
            results.append((item, cost))
            continue
        if role == "assistant" and agent_id == speaker_id and tool_calls:
            units = [([r for r, _ in results] + [item], cost + sum(c for _, c in results))]
        else:  # results not answering a call just before them stand alone
            units = [([r], c) for r, c in results] + [([item], cost)]
        results = []
        for unit, unit_cost in units:
            if kept and unit_cost > remaining:
                return _chat(kept, speaker_id, names)
            kept.extend(unit)
            remaining -= unit_cost
    return _chat(kept, speaker_id, names)


def _chat(kept: list[HistoryItem], speaker_id: int, names: dict[int, str]) -> list[ChatMessage]:
    return [_as_chat(item, speaker_id, names) for item in reversed(kept)]


def build_context(
    db: Session,
    session_id: int,
    speaker: Speaker,
    *,
    instructions: str,
    names: dict[int, str],
    budget_tokens: int,
    turn_id: int,
) -> list[ChatMessage]:
    """The prompt for ``speaker``: system prompt, then as much recent history as fits, in the
    shape strict chat templates accept (chat_rules.conform: merged runs, framing messages)."""
    others = [name for agent_id, name in names.items() if agent_id != speaker.id]
    system = ChatMessage(role="system", content=system_prompt(speaker, instructions, others))
    history = visible_history(db, session_id, speaker.id, turn_id)
    # Conforming merges messages (which costs less) and may add the framing (which costs more).
    remaining = budget_tokens - estimate_prompt_tokens([system]) - FRAMING_TOKENS
    return conform([system, *fit_history(history, speaker.id, names, remaining)])
