"""Agents and rooms named on the command line by id or by name."""

from __future__ import annotations

from typing import Any

import click

from .. import Agent, NotFound, Room, Roomcast
from .context import Connection, pass_connection
from .output import CommandFailed, console, escape


def find_agent(client: Roomcast, ref: str) -> Agent:
    found: Agent = _find(client.agents, ref, "agent")
    return found


def find_room(client: Roomcast, ref: str) -> Room:
    found: Room = _find(client.rooms, ref, "room")
    return found


def delete_command(kind: str) -> click.Command:
    """``roomcast agents delete`` / ``rooms delete``: by id or name; the history is kept."""

    @click.command("delete", help=f"Delete {kind.upper()} (an id or a name); its history stays.")
    @click.argument(kind)
    @pass_connection
    def delete(connection: Connection, /, **ref: str) -> None:
        resource = getattr(connection.client(), f"{kind}s")
        found = _find(resource, ref[kind], kind)
        resource.delete(found.id)
        console.print(f"Deleted {kind} [bold]{escape(found.name)}[/] (id {found.id}).")

    return delete


def _find(resource: Any, ref: str, kind: str) -> Any:
    """The agent or room with id ``ref``, else the one named ``ref`` (names are unique per
    user). An id that matches nothing fails with the API's own 404."""
    missing: NotFound | None = None
    if ref.isdigit():
        try:
            return resource.get(int(ref))
        except NotFound as exc:
            missing = exc  # perhaps a name made of digits
    # The API filters by substring (q); the exact name is picked here.
    for item in resource.list(q=ref):
        if item.name == ref:
            return item
    if missing is not None:
        raise missing
    raise CommandFailed(f"no {kind} named {ref!r} (see `roomcast {kind}s`)")
