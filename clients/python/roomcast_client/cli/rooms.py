"""``roomcast rooms``: list and create rooms, put agents in them and take them out."""

from __future__ import annotations

import click

from .context import Connection, pass_connection, resource_group
from .lookup import delete_command, find_agent, find_room
from .output import console, escape, print_table, when

rooms = resource_group("rooms", "Your rooms (a table; see the commands to change them).")


@rooms.command("list")
@pass_connection
def list_rooms(connection: Connection) -> None:
    """List your rooms and their agents in speaking order."""
    rows = [
        (
            room.id,
            room.name,
            room.orchestration.mode,
            room.orchestration.max_rounds,
            ", ".join(member.agent.name for member in room.agents if member.agent),
            when(room.created_at),
        )
        for room in connection.client().rooms.list()
    ]
    print_table("Rooms", ("id", "name", "mode", "max rounds", "agents", "created"), rows)


@rooms.command("create")
@click.argument("name")
@click.option(
    "--mode",
    help="Who speaks: sequential (every agent in order, the default), round_robin (the next "
    "in turn), mention (the @mentioned ones) or supervisor (a selector's picks).",
)
@click.option("--max-rounds", type=click.IntRange(min=1), help="Bound on a turn's rounds.")
@click.option("--instructions", help="Shared context every agent in the room sees.")
@click.option(
    "--agent", "members", multiple=True, help="An agent to put in the room (id or name; repeat)."
)
@pass_connection
def create_room(
    connection: Connection,
    name: str,
    mode: str | None,
    max_rounds: int | None,
    instructions: str | None,
    members: tuple[str, ...],
) -> None:
    """Create a room called NAME."""
    client = connection.client()
    # Resolved first: a wrong name fails before anything is created.
    found = [find_agent(client, member) for member in members]
    orchestration = {
        key: value for key, value in (("mode", mode), ("max_rounds", max_rounds)) if value
    }
    room = client.rooms.create(
        name=name, instructions=instructions, orchestration=orchestration or None
    )
    for agent in found:
        client.rooms.agents.add(room.id, agent.id)
    console.print(
        f"Created room [bold]{escape(room.name)}[/] (id {room.id}, {room.orchestration.mode})"
        + (f" with {escape(', '.join(a.name for a in found))}." if found else ".")
    )


@rooms.command("add")
@click.argument("room")
@click.argument("agent")
@click.option("--position", type=click.IntRange(min=0), help="0-based place in the speaking order.")
@pass_connection
def add_agent(connection: Connection, room: str, agent: str, position: int | None) -> None:
    """Put AGENT in ROOM (each an id or a name), last unless --position."""
    client = connection.client()
    found_room, found_agent = find_room(client, room), find_agent(client, agent)
    fields = {} if position is None else {"position": position}
    member = client.rooms.agents.add(found_room.id, found_agent.id, **fields)
    console.print(
        f"Added [bold]{escape(found_agent.name)}[/] to room [bold]{escape(found_room.name)}[/] "
        f"at position {member.position}."
    )


@rooms.command("remove")
@click.argument("room")
@click.argument("agent")
@pass_connection
def remove_agent(connection: Connection, room: str, agent: str) -> None:
    """Take AGENT out of ROOM (each an id or a name); the agent itself stays."""
    client = connection.client()
    found_room, found_agent = find_room(client, room), find_agent(client, agent)
    client.rooms.agents.remove(found_room.id, found_agent.id)
    console.print(
        f"Removed [bold]{escape(found_agent.name)}[/] from room [bold]{escape(found_room.name)}[/]."
    )


rooms.add_command(delete_command("room"))
