"""The ``roomcast`` command: its root group and subcommands.

Every command talks to the API through :class:`roomcast_client.Roomcast`. The server's address
and the token come from the options and environment (``--url``/``ROOMCAST_URL``,
``ROOMCAST_TOKEN``), else from the file ``roomcast login`` writes (config.py).
"""

from __future__ import annotations

import os

import click

from . import agents, auth, chat, files, rooms, usage
from .config import DEFAULT_URL
from .context import Connection, RoomcastGroup


@click.group(cls=RoomcastGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="ROOMCAST_URL",
    help=f"The Roomcast server (default: the one you logged in to, else {DEFAULT_URL}).",
)
@click.version_option(package_name="roomcast-client", prog_name="roomcast")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """Talk to a Roomcast server: agents, rooms, files, chat and usage."""
    ctx.obj = Connection.from_settings(url, os.environ.get("ROOMCAST_TOKEN") or None)
    ctx.call_on_close(ctx.obj.close)


for command in (
    auth.login,
    auth.logout,
    agents.agents,
    rooms.rooms,
    files.files,
    chat.chat,
    usage.usage,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="roomcast")
