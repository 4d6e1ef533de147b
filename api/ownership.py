"""Loading a user's rows: another user's row is indistinguishable from a missing one (404)."""

from __future__ import annotations

from typing import Any, TypeVar

from flask_smorest import abort
from sqlalchemy import select

from models import ChatSession, Turn
from models.base import MAX_ID
from models.db import lock_row

from .auth import current_user_id
from .pagination import paginate
from .state import get_db

T = TypeVar("T")


def get_owned(
    model: type[T], row_id: int, *, include_deleted: bool = False, for_update: bool = False
) -> T | None:
    """The caller's ``model`` row ``row_id``, or None (also for soft-deleted rows).

    ``for_update`` locks the row until the commit.
    """
    if not 1 <= row_id <= MAX_ID:
        return None  # the database would reject the number rather than find nothing
    db = get_db()
    if for_update:
        lock_row(db, model, row_id)
    row = db.get(model, row_id, populate_existing=for_update)
    if (
        row is None
        or row.user_id != current_user_id()
        or (not include_deleted and getattr(row, "deleted_at", None) is not None)
    ):
        return None
    return row


def get_owned_or_404(
    model: type[T], row_id: int, *, include_deleted: bool = False, for_update: bool = False
) -> T:
    """The caller's ``model`` row ``row_id``, or abort 404 (also for soft-deleted rows)."""
    row = get_owned(model, row_id, include_deleted=include_deleted, for_update=for_update)
    if row is None:
        abort(404, message=f"{model.__name__} {row_id} not found.")
    return row


def list_live_named(model: Any, args: dict[str, Any], *options: Any) -> dict[str, Any]:
    """One page of the caller's live (not soft-deleted) ``model`` rows, by id.

    ``args`` are loaded ``NameSearchArgsSchema`` values: ``q`` keeps the rows whose name contains
    it, ignoring case. ``options`` are loader options (e.g. ``selectinload``) for the rows.
    """
    stmt = select(model).where(model.user_id == current_user_id(), model.deleted_at.is_(None))
    if args.get("q"):
        stmt = stmt.where(model.name.icontains(args["q"], autoescape=True))
    return paginate(get_db(), stmt.options(*options), [model.id], args)


def get_turn_or_404(turn_id: int) -> Turn:
    """The caller's turn, re-read from the database; 404 also when its session was deleted."""
    turn = get_db().scalar(
        select(Turn)
        .join(ChatSession, ChatSession.id == Turn.session_id)
        .where(
            Turn.id == turn_id, Turn.user_id == current_user_id(), ChatSession.deleted_at.is_(None)
        )
        .execution_options(populate_existing=True)
    )
    if turn is None:
        abort(404, message=f"Turn {turn_id} not found.")
    return turn
