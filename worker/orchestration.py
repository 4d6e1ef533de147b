"""Who speaks in a turn: the standalone agent, or the room's members by the room's mode.

Modes (every room turn is bounded by ``max_rounds``):
- ``sequential``: every member once per round, in position order, each seeing the replies
  before it.
- ``round_robin``: the next member in rotation across turns, one per round.
- ``mention``: the members the user addresses as ``@name`` answer once each, in order of
  mention (nobody addressed: the room's ``default_agent_id``, or else the first member). A
  reply that addresses other members as ``@name`` has them answer in the next round, once each,
  up to ``max_rounds`` rounds (worker/orchestrator.py).
- ``supervisor``: decided step by step by a selector (see worker/orchestrator.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Message


def mentioned(content: str, members: Sequence[tuple[int, str]]) -> list[int]:
    """Member ids addressed as ``@name`` in ``content``, in order of first mention.

    Longer names are matched first, so ``@Ann Lee`` is not taken for ``@Ann``.
    """
    text = content.lower()
    taken = [False] * len(text)
    found: list[tuple[int, int]] = []
    for agent_id, name in sorted(members, key=lambda m: -len(m[1])):
        pattern = re.compile(r"@" + re.escape(name.lower()) + r"(?![\w-])")
        for match in pattern.finditer(text):
            if not any(taken[match.start() : match.end()]):
                for i in range(match.start(), match.end()):
                    taken[i] = True
                found.append((match.start(), agent_id))
                break
    return [agent_id for _, agent_id in sorted(found)]


def last_speaker(db: Session, session_id: int, before_turn_id: int) -> int | None:
    """The agent that spoke last in the session's earlier turns (for round-robin rotation)."""
    return db.scalar(
        select(Message.agent_id)
        .where(
            Message.session_id == session_id,
            Message.turn_id < before_turn_id,
            Message.role == "assistant",
            Message.visibility == "shared",
            Message.agent_id.is_not(None),
        )
        .order_by(Message.id.desc())
        .limit(1)
    )


def plan_speakers(
    mode: str,
    member_ids: Sequence[int],
    *,
    rounds: int,
    content: str,
    names: dict[int, str],
    previous_speaker: int | None,
    default_agent_id: int | None,
) -> list[int]:
    """The speaking order of a room turn in a planned mode (not supervisor)."""
    members = list(member_ids)
    if not members:
        return []
    if mode == "sequential":
        return members * rounds
    if mode == "round_robin":
        start = (members.index(previous_speaker) + 1) if previous_speaker in members else 0
        return [members[(start + i) % len(members)] for i in range(rounds)]
    if mode == "mention":
        addressed = mentioned(content, [(m, names[m]) for m in members])
        if not addressed:
            addressed = [default_agent_id if default_agent_id in members else members[0]]
        return addressed
    raise ValueError(f"mode {mode!r} is not planned ahead")


SELECTOR_DONE = "DONE"


def selector_prompt(members: Sequence[tuple[int, str]], spoken: Sequence[str]) -> str:
    roster = "\n".join(f"- {name}" for _, name in members)
    already = ", ".join(spoken) if spoken else "nobody yet"
    return (
        "You coordinate a conversation between a user and these agents:\n"
        f"{roster}\n"
        f"In this turn so far: {already} answered.\n"
        "Reply with exactly the name of the agent who should speak next, or "
        f"{SELECTOR_DONE} if the user's last message has been fully answered. Reply with the "
        "name or DONE only."
    )


def parse_pick(reply: str, members: Sequence[tuple[int, str]]) -> int | None | str:
    """A member id, ``SELECTOR_DONE``, or None when the reply names no member."""
    text = reply.strip().strip(".!\"'`*").strip()
    if text.upper().startswith(SELECTOR_DONE):
        return SELECTOR_DONE
    lowered = text.lower()
    for agent_id, name in sorted(members, key=lambda m: -len(m[1])):
        if lowered == name.lower() or lowered.startswith(name.lower()):
            return agent_id
    for agent_id, name in sorted(members, key=lambda m: -len(m[1])):
        if re.search(r"\b" + re.escape(name.lower()) + r"\b", lowered):
            return agent_id
    return None
