"""The caller's webhook signing secret: created or rotated (shown once), and required by any
webhook URL a request sets."""

from __future__ import annotations

from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import WebhookSecret, utcnow
from models.webhook_secrets import new_secret, seal

from .auth import current_user_id
from .state import get_db, state

SECRET_REQUIRED = (
    "A webhook needs your signing secret: create it first (POST /api/v1/auth/webhook-secret)."
)


def require_secret_for(url: str | None) -> None:
    """422 naming ``webhook`` if the caller sets a webhook URL before having a secret (every
    delivery is signed; secrets are never deleted, only rotated)."""
    if url is None:
        return
    user_id = current_user_id()
    if get_db().scalar(select(WebhookSecret.user_id).where(WebhookSecret.user_id == user_id)):
        return
    abort(
        422,
        message=SECRET_REQUIRED,
        code="webhook_secret_required",
        errors={"webhook": [SECRET_REQUIRED]},
    )


def rotate() -> tuple[str, WebhookSecret]:
    """A new secret for the caller, replacing any earlier one; returns it with its row."""
    db = get_db()
    secret = new_secret()
    sealed = seal(secret, state().settings.secret_key)
    for _ in range(2):  # a concurrent first creation wins the insert: then replace it
        row = db.get(WebhookSecret, current_user_id(), with_for_update=True)
        if row is None:
            row = WebhookSecret(user_id=current_user_id())
            db.add(row)
        row.sealed, row.created_at = sealed, utcnow()
        try:
            db.commit()
            return secret, row
        except IntegrityError:
            db.rollback()
    abort(409, message="The secret is being changed by another request; retry.", code="conflict")
