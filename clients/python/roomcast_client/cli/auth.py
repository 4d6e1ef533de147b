"""``roomcast login`` and ``roomcast logout``: a token of the user's, stored for later runs."""

from __future__ import annotations

import contextlib
import os
import socket

import click

from .. import APIError, Roomcast
from . import config as config_file
from .context import Connection, pass_connection
from .output import console


@click.command()
@click.option("--url", help="The Roomcast server (asked when not given).")
@click.option("--email", help="Your account's email (asked when not given).")
@click.option(
    "--register", is_flag=True, help="Create the account first (if the server allows it)."
)
@click.option(
    "--token-name",
    default=lambda: f"roomcast CLI on {socket.gethostname()}",
    show_default="roomcast CLI on HOSTNAME",
    help="A label for the token, shown in the server's token list.",
)
@pass_connection
def login(
    connection: Connection, url: str | None, email: str | None, register: bool, token_name: str
) -> None:
    """Log in: create a token and store it for the next commands.

    The password is asked without echo (or read from ROOMCAST_PASSWORD). The token is kept in
    the user's configuration folder, readable by the user only.
    """
    url = (url or connection.given_url or _ask_url(connection)).rstrip("/")
    email = email or click.prompt("Email")
    password = os.environ.get("ROOMCAST_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=register
    )
    with Roomcast(base_url=url, token=None) as client:
        if register:
            client.auth.register(email, password)
            console.print(f"Registered [bold]{email}[/].")
        token = client.auth.create_token(email, password, name=token_name)
    _revoke_quietly(connection.stored)
    path = config_file.save(
        config_file.Config(url=url, token=token.token, token_id=token.id, email=email)
    )
    console.print(f"Logged in to {url} as [bold]{email}[/]; token saved in {path}.")


def _ask_url(connection: Connection) -> str:
    return click.prompt("Server URL", default=connection.url)


def _revoke_quietly(stored: config_file.Config) -> None:
    """Revoke the token a new login replaces: it would otherwise stay valid, forgotten."""
    if not (stored.url and stored.token and stored.token_id):
        return
    # Best effort: it may be revoked already, or its server gone.
    with (
        contextlib.suppress(Exception),
        Roomcast(base_url=stored.url, token=stored.token) as client,
    ):
        client.auth.tokens.revoke(stored.token_id)


@click.command()
@pass_connection
def logout(connection: Connection) -> None:
    """Revoke the stored token and forget it."""
    stored = connection.stored
    if not stored.token:
        console.print("Not logged in.")
        return
    if stored.token_id is not None:
        with Roomcast(base_url=stored.url, token=stored.token) as client:
            try:
                client.auth.tokens.revoke(stored.token_id)
            except APIError as exc:
                if exc.status not in (401, 404):  # already revoked or expired: forget it
                    raise
    config_file.save(config_file.Config(url=stored.url, email=stored.email))
    console.print(f"Logged out of {stored.url}; the token is revoked.")
