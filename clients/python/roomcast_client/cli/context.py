"""What every command shares: the connection settings, the client, and error descriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click
import httpx

from .. import APIConnectionError, APIError, Roomcast, RoomcastError
from . import config as config_file
from .output import CommandFailed


def describe(error: Exception) -> str:
    """One line for an API or connection error: the API's message, status and code, and for
    a 422 each field's messages."""
    if isinstance(error, APIError):
        text = f"{error.message} ({error.status} {error.code})"
        details = "; ".join(f"{name}: {_messages(value)}" for name, value in error.errors.items())
        return f"{text}: {details}" if details else text
    if isinstance(error, APIConnectionError | httpx.HTTPError):
        return f"cannot reach the server: {error}"
    return str(error)  # an answer the client could not read


def _messages(value: object) -> str:
    if isinstance(value, list):
        return " ".join(_messages(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_messages(item)}" for key, item in value.items())
    return str(value)


@dataclass
class Connection:
    """The settings one invocation uses, and the client built from them on first use."""

    url: str
    token: str | None
    stored: config_file.Config
    given_url: str | None = None  # from --url or ROOMCAST_URL
    _client: Roomcast | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, url: str | None, token: str | None) -> Connection:
        """``url`` and ``token`` as given (options, environment), the rest from the stored
        configuration. The stored token goes only to the server it was issued by."""
        stored = config_file.load()
        resolved = (url or stored.url or config_file.DEFAULT_URL).rstrip("/")
        if token is None and stored.url and stored.url.rstrip("/") == resolved:
            token = stored.token
        return cls(url=resolved, token=token, stored=stored, given_url=url)

    def client(self) -> Roomcast:
        """The client for the user's commands: a token is needed."""
        if not self.token:
            raise CommandFailed(
                f"not logged in to {self.url}: run `roomcast login` (or set ROOMCAST_TOKEN)"
            )
        if self._client is None:
            self._client = Roomcast(base_url=self.url, token=self.token)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_connection = click.make_pass_decorator(Connection)


def resource_group(name: str, summary: str) -> click.Group:
    """The commands of one resource (``roomcast agents create``...); without one, its
    ``list`` command runs (``roomcast agents``)."""

    @click.pass_context
    def list_by_default(ctx: click.Context) -> None:
        if ctx.invoked_subcommand is None:
            ctx.invoke(group.commands["list"])

    group = click.Group(name, help=summary, invoke_without_command=True, callback=list_by_default)
    return group


class RoomcastGroup(click.Group):
    """Turns the client's errors into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (RoomcastError, httpx.HTTPError) as exc:
            raise CommandFailed(describe(exc)) from None
