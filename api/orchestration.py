"""A room's orchestration: who speaks (the mode), for how long (``max_rounds``), and the mode's
options. ``mode`` and ``max_rounds`` are ``Room`` columns; the options live in the JSON
``Room.orchestration``; clients see the three as one object.

Options per mode:
- ``supervisor``: the selector that picks the next speaker, either one of the user's agents
  (``selector_agent_id``) or a catalog model (``selector_provider`` + ``selector_model``). Without
  either, the server's default provider and its default model select.
- ``mention``: ``default_agent_id``, the agent that answers a message addressed to nobody.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Agent, Room
from models.rooms import ROOM_MODES

from .catalog import resolve_model
from .ownership import get_owned

MAX_ROUNDS = 20
DEFAULTS: dict[str, Any] = {"mode": "sequential", "max_rounds": 1}
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "sequential": (),
    "round_robin": (),
    "mention": ("default_agent_id",),
    "supervisor": ("selector_agent_id", "selector_provider", "selector_model"),
}
OPTIONS = tuple(option for mode in ROOM_MODES for option in MODE_OPTIONS[mode])
SELECTOR_MODEL = ("selector_provider", "selector_model")
AGENT_OPTIONS = ("selector_agent_id", "default_agent_id")


def orchestration_of(room: Room) -> dict[str, Any]:
    """The room's orchestration as clients see it (every option present, null when unset)."""
    options = room.orchestration or {}
    return {
        "mode": room.mode,
        "max_rounds": room.max_rounds,
        **{name: options.get(name) for name in OPTIONS},
    }


def _given(given: dict[str, Any], *names: str) -> bool:
    return any(given.get(name) is not None for name in names)


def _check_live_agent(errors: dict, name: str, agent_id: int | None) -> None:
    # Locked until the commit, so that the agent's deletion waits and then forgets it here.
    if agent_id is not None and get_owned(Agent, agent_id, for_update=True) is None:
        errors[name] = [f"Agent {agent_id} not found."]


def merge_orchestration(given: dict[str, Any], room: Room | None = None) -> dict[str, Any]:
    """The orchestration that ``given`` (a request's possibly partial object) makes of the room's
    current one (the defaults for a new room), validated as a whole.

    A null option clears it. Options of another mode are an error when given, and dropped when
    left over from the room's previous mode. Raises ``ValidationError`` keyed by option name.
    """
    current = orchestration_of(room) if room is not None else {**DEFAULTS, **dict.fromkeys(OPTIONS)}
    merged = dict(current)
    # The selector is one choice, an agent or a model: naming one replaces the other.
    if _given(given, "selector_agent_id"):
        merged.update(dict.fromkeys(SELECTOR_MODEL))
    if _given(given, *SELECTOR_MODEL):
        merged["selector_agent_id"] = None
    merged.update(given)

    mode = merged["mode"]
    errors: dict[str, list[str]] = {}
    for name in OPTIONS:
        if name not in MODE_OPTIONS[mode] and merged.get(name) is not None:
            if _given(given, name):
                owner = next(m for m in ROOM_MODES if name in MODE_OPTIONS[m])
                errors[name] = [f"Only for mode {owner!r}; this room's mode is {mode!r}."]
            merged[name] = None
    merged = {name: merged.get(name) for name in ("mode", "max_rounds", *OPTIONS)}

    if mode == "supervisor" and merged["selector_agent_id"] is not None:
        if _given(given, *SELECTOR_MODEL):
            errors["selector_agent_id"] = ["Give a selector agent or a selector model, not both."]
        _check_live_agent(errors, "selector_agent_id", merged["selector_agent_id"])
    elif mode == "supervisor":
        stored = tuple(current[name] for name in SELECTOR_MODEL)
        # A null provider or model resets the selector model to the default.
        reset = any(name in given and given[name] is None for name in SELECTOR_MODEL)
        try:
            merged["selector_provider"], merged["selector_model"] = resolve_model(
                given.get("selector_provider"),
                given.get("selector_model"),
                None if reset or not all(stored) else stored,
                fields=SELECTOR_MODEL,
            )
        except ma.ValidationError as exc:
            errors.update(exc.messages)
    elif mode == "mention":
        _check_live_agent(errors, "default_agent_id", merged["default_agent_id"])
    if errors:
        raise ma.ValidationError(errors)
    return merged


def apply_orchestration(room: Room, orchestration: dict[str, Any]) -> None:
    """Store a merged orchestration on the room (columns for mode and bound, JSON for options)."""
    room.mode = orchestration["mode"]
    room.max_rounds = orchestration["max_rounds"]
    room.orchestration = {
        name: orchestration[name] for name in OPTIONS if orchestration.get(name) is not None
    }


def forget_agent(db: Session, agent: Agent) -> None:
    """Drop a deleted agent from the options of the user's rooms: a supervisor room whose
    selector it was falls back to the default selector model; a mention room loses its default
    speaker."""
    modes = [mode for mode, options in MODE_OPTIONS.items() if set(options) & set(AGENT_OPTIONS)]
    rooms = db.scalars(
        select(Room).where(
            Room.user_id == agent.user_id, Room.deleted_at.is_(None), Room.mode.in_(modes)
        )
    )
    for room in rooms:
        options = orchestration_of(room)
        if agent.id not in (options[name] for name in AGENT_OPTIONS):
            continue
        for name in AGENT_OPTIONS:
            if options[name] == agent.id:
                options[name] = None
        if room.mode == "supervisor":
            options["selector_provider"], options["selector_model"] = resolve_model(None, None)
        apply_orchestration(room, options)
