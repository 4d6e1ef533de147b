"""What each agent sees: its private system prompt, the room's shared instructions, the shared
transcript with speakers named, and its own private items (tool calls and results).

Other agents' private items never enter an agent's context. Long histories are cut to a token
budget, newest kept, and a tool call is never separated from its results.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Row, or_, select
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


# What a context is made of. Whole rows would also parse each message's metadata JSON and
# track hundreds of ORM objects per step, for nothing: measured, that was a third of a turn's
# worker time once a session had a few hundred messages.
_CONTEXT_COLUMNS = (
    Message.id,
    Message.role,
    Message.agent_id,
    Message.content,
    Message.tool_calls,
    Message.tool_call_id,
)


def visible_history(db: Session, session_id: int, speaker_id: int) -> list[Row]:
    """The messages one agent may see, oldest first: shared ones and its own private ones.

    Rows of the columns a context needs (``role``, ``agent_id``, ``content``, ``tool_calls``,
    ``tool_call_id``), read like Message attributes.
    """
    rows = db.execute(
        select(*_CONTEXT_COLUMNS)
        .where(
            Message.session_id == session_id,
            or_(
                Message.visibility == "shared",
                (Message.visibility == "private") & (Message.agent_id == speaker_id),
            ),
        )
        .order_by(Message.id.desc())
        .limit(MAX_HISTORY_MESSAGES)
    ).all()
    return list(reversed(rows))


def _as_chat(message: Row, speaker_id: int, names: dict[int, str]) -> ChatMessage:
    if message.role == "tool":
        return ChatMessage(role="tool", content=message.content, tool_call_id=message.tool_call_id)
    if message.role == "assistant" and message.agent_id == speaker_id:
        calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in message.tool_calls or []]
        return ChatMessage(role="assistant", content=message.content, tool_calls=calls or None)
    if message.role == "assistant":
        name = names.get(message.agent_id, f"agent {message.agent_id}")
        return ChatMessage(role="user", content=f"[{name}]: {message.content}")
    return ChatMessage(role="user", content=message.content)


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
