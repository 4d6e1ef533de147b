"""What each agent sees: its private system prompt, the room's shared instructions, the shared
transcript with speakers named, and its own private items (tool calls and results).

Other agents' private items never enter an agent's context. Long histories are cut to a token
budget, newest kept, and a tool call is never separated from its results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from models import Message

from .providers.base import ChatMessage, ToolCall, estimate_tokens

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
_VISIBLE_HISTORY = (
    select(*(_messages.c[name] for name in HistoryItem._fields))
    .where(
        _messages.c.session_id == bindparam("session_id"),
        or_(
            _messages.c.visibility == "shared",
            (_messages.c.visibility == "private")
            & (_messages.c.agent_id == bindparam("speaker_id")),
        ),
    )
    .order_by(_messages.c.id.desc())
    .limit(MAX_HISTORY_MESSAGES)
)


def visible_history(db: Session, session_id: int, speaker_id: int) -> list[HistoryItem]:
    """The messages one agent may see, oldest first: shared ones and its own private ones."""
    rows = db.execute(_VISIBLE_HISTORY, {"session_id": session_id, "speaker_id": speaker_id})
    return list(map(HistoryItem._make, reversed(rows.all())))


def _as_chat(message: HistoryItem, speaker_id: int, names: dict[int, str]) -> ChatMessage:
    role, agent_id, content = message.role, message.agent_id, message.content
    if role == "tool":
        return ChatMessage(role="tool", content=content, tool_call_id=message.tool_call_id)
    if role == "assistant" and agent_id == speaker_id:
        calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in message.tool_calls or []]
        return ChatMessage(role="assistant", content=content, tool_calls=calls or None)
    if role == "assistant":
        name = names.get(agent_id) or f"agent {agent_id}"
        return ChatMessage(role="user", content=f"[{name}]: {content}")
    return ChatMessage(role="user", content=content)


def _units(history: list[ChatMessage]) -> list[list[ChatMessage]]:
    """Group an assistant tool call with the tool results that answer it."""
    units: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "tool" and units and units[-1][0].tool_calls:
            units[-1].append(message)
        else:
            units.append([message])
    return units


def _cost(unit: list[ChatMessage]) -> int:
    return sum(4 + estimate_tokens(m.content or "") for m in unit)


def build_context(
    db: Session,
    session_id: int,
    speaker: Speaker,
    *,
    instructions: str,
    names: dict[int, str],
    budget_tokens: int,
) -> list[ChatMessage]:
    """The prompt for ``speaker``: system prompt, then as much recent history as fits."""
    others = [name for agent_id, name in names.items() if agent_id != speaker.id]
    system = ChatMessage(role="system", content=system_prompt(speaker, instructions, others))
    history = [_as_chat(m, speaker.id, names) for m in visible_history(db, session_id, speaker.id)]
    units = _units(history)
    # Drop tool results whose call was cut off by the history window.
    while units and units[0][0].role == "tool":
        units.pop(0)
    remaining = budget_tokens - _cost([system])
    kept: list[list[ChatMessage]] = []
    for unit in reversed(units):
        cost = _cost(unit)
        if kept and cost > remaining:
            break  # the newest unit is always kept, however long
        kept.append(unit)
        remaining -= cost
    return [system] + [m for unit in reversed(kept) for m in unit]
