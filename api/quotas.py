"""Per-user caps on how many agents, rooms, sessions and files one user may have.

Only live rows count: a soft-deleted agent, room or session frees its place. The count is taken
under a lock of the user's row, so two concurrent creates at the cap cannot both pass.
"""

from __future__ import annotations

from flask_smorest import Blueprint, abort
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Agent, ChatSession, Room, UploadedFile, User
from models.db import lock_row

from .auth import current_user_id
from .errors import error_response
from .state import state

# model -> (Settings attribute, environment variable, plural noun for messages)
CAPS = {
    Agent: ("max_agents_per_user", "ROOMCAST_MAX_AGENTS_PER_USER", "agents"),
    Room: ("max_rooms_per_user", "ROOMCAST_MAX_ROOMS_PER_USER", "rooms"),
    ChatSession: ("max_sessions_per_user", "ROOMCAST_MAX_SESSIONS_PER_USER", "sessions"),
    UploadedFile: ("max_files_per_user", "ROOMCAST_MAX_FILES_PER_USER", "files"),
}
LIMIT_REACHED = "limit_reached"


def limit_reached_message(model: type, cap: int) -> str:
    _, variable, noun = CAPS[model]
    return (
        f"You have {cap} {noun}, the most one user may have ({variable}={cap}):"
        f" delete some to create more."
    )


def limit_reached_response(
    blp: Blueprint, model: type, other_conflicts: str = "", **more_examples: str
):
    """Document the 409 of a create at the cap (``other_conflicts``: the view's other 409s,
    with an example for each in ``more_examples``)."""
    _, variable, noun = CAPS[model]
    at_cap = f"you have as many {noun} as allowed ({variable})"
    return error_response(
        blp,
        409,
        f"{other_conflicts}, or {at_cap}."
        if other_conflicts
        else f"{at_cap[0].upper()}{at_cap[1:]}.",
        {**more_examples, LIMIT_REACHED: limit_reached_message(model, 1000)},
    )


def require_below_cap(db: Session, model: type, *, user_locked: bool = False) -> None:
    """409 ``limit_reached`` when the user already has as many live ``model`` rows as allowed.

    Locks the user's row until the commit (unless the caller did, ``user_locked``), so the
    count stays true until the new row is written. Nothing is locked when there is no cap.
    """
    attribute, variable, _ = CAPS[model]
    cap = getattr(state().settings, attribute)
    if not cap:
        return
    user_id = current_user_id()
    if not user_locked:
        lock_row(db, User, user_id)
    live = db.scalar(
        select(func.count())
        .select_from(model)
        .where(model.user_id == user_id, model.deleted_at.is_(None))
    )
    if live >= cap:
        db.rollback()
        abort(
            409,
            code=LIMIT_REACHED,
            message=limit_reached_message(model, cap),
            limit=cap,
            setting=variable,
        )
