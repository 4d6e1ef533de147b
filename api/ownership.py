"""Loading a user's rows: another user's row is indistinguishable from a missing one (404)."""

from __future__ import annotations

from typing import TypeVar

from flask_smorest import abort

from .auth import current_user_id
from .state import get_db

T = TypeVar("T")


def get_owned_or_404(model: type[T], row_id: int, *, include_deleted: bool = False) -> T:
    """The caller's ``model`` row ``row_id``, or abort 404 (also for soft-deleted rows)."""
    row = get_db().get(model, row_id)
    if (
        row is None
        or row.user_id != current_user_id()
        or (not include_deleted and getattr(row, "deleted_at", None) is not None)
    ):
        abort(404, message=f"{model.__name__} {row_id} not found.")
    return row
