"""Operator commands for users: ``flask --app api users create|list|tokens|revoke-token``."""

from __future__ import annotations

import secrets

import click
from flask.cli import AppGroup
from sqlalchemy import func, select

from models import ApiToken, User
from models.base import utcnow
from models.users import issue_token

from .auth import hash_password
from .state import state

users_cli = AppGroup("users", help="Manage users.")


@users_cli.command("create")
@click.argument("email")
@click.option("--password", help="Password for logging in later; a random one if omitted.")
@click.option("--token-name", default="cli", show_default=True)
def create_user(email: str, password: str | None, token_name: str) -> None:
    """Create a user (or reuse an existing one) and print a new API token."""
    email = email.strip().lower()
    if "@" not in email:
        raise click.BadParameter("not an email address", param_hint="EMAIL")
    with state().sessionmaker() as db:
        user = db.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(
                email=email, password_hash=hash_password(password or secrets.token_urlsafe(24))
            )
            db.add(user)
        elif password:
            raise click.UsageError(f"{email} exists already; its password is left unchanged")
        token, secret = issue_token(
            db, user, name=token_name, ttl_days=state().settings.token_ttl_days
        )
        db.commit()
    click.echo(secret)


@users_cli.command("list")
def list_users() -> None:
    """Every user: id, email, when created, live tokens."""
    now = utcnow()
    live = (ApiToken.revoked_at.is_(None)) & (
        ApiToken.expires_at.is_(None) | (ApiToken.expires_at > now)
    )
    with state().sessionmaker() as db:
        rows = db.execute(
            select(User.id, User.email, User.created_at, func.count(ApiToken.id))
            .outerjoin(ApiToken, (ApiToken.user_id == User.id) & live)
            .group_by(User.id)
            .order_by(User.id)
        ).all()
    for user_id, email, created_at, tokens in rows:
        click.echo(f"{user_id}\t{email}\t{created_at:%Y-%m-%d %H:%M}\t{tokens} live token(s)")


def _user_by_email(db, email: str) -> User:
    user = db.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user {email}")
    return user


@users_cli.command("tokens")
@click.argument("email")
def list_tokens(email: str) -> None:
    """A user's tokens (never their secrets): id, name, hint, created, last used, state."""
    now = utcnow()
    with state().sessionmaker() as db:
        user = _user_by_email(db, email)
        tokens = db.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
        ).all()
    for t in tokens:
        if t.revoked_at:
            status = "revoked"
        elif t.expires_at and t.expires_at <= now:
            status = "expired"
        else:
            status = "live"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        click.echo(
            f"{t.id}\t{t.name}\t{t.token_hint}...\t{t.created_at:%Y-%m-%d}\t{used}\t{status}"
        )


@users_cli.command("revoke-token")
@click.argument("email")
@click.argument("token_id", type=int)
def revoke_token(email: str, token_id: int) -> None:
    """Revoke one of a user's tokens (requests with it are refused within the token cache's
    lifetime, ROOMCAST_TOKEN_CACHE_SECONDS)."""
    with state().sessionmaker() as db, db.begin():
        user = _user_by_email(db, email)
        token = db.get(ApiToken, token_id)
        if token is None or token.user_id != user.id:
            raise click.ClickException(f"{email} has no token {token_id}")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
    click.echo(f"token {token_id} of {email} revoked")
