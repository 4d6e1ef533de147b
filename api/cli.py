"""Operator commands: ``flask --app api users create EMAIL``."""

from __future__ import annotations

import secrets

import click
from flask.cli import AppGroup
from sqlalchemy import select

from models import User
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
