"""``roomcast agents``: list, create and delete agents."""

from __future__ import annotations

import click

from .context import Connection, pass_connection
from .lookup import find_agent
from .output import console, escape, print_table, when


@click.group(invoke_without_command=True)
@click.pass_context
def agents(ctx: click.Context) -> None:
    """Your agents (a table; see the subcommands to change them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_agents)


@agents.command("list")
@pass_connection
def list_agents(connection: Connection) -> None:
    """List your agents."""
    rows = [
        (a.id, a.name, a.provider, a.model, ", ".join(a.tools or ()), when(a.created_at))
        for a in connection.client().agents.list()
    ]
    print_table("Agents", ("id", "name", "provider", "model", "tools", "created"), rows)


@agents.command("create")
@click.argument("name")
@click.option("--provider", help="A provider the server knows (default: the server's).")
@click.option("--model", help="A model of that provider (default: the provider's).")
@click.option("--system-prompt", help="Private instructions for the agent.")
@click.option(
    "--tool", "tools", multiple=True, help="A tool the agent may call (repeat for several)."
)
@click.option("--description", help="A line about the agent.")
@pass_connection
def create_agent(
    connection: Connection,
    name: str,
    provider: str | None,
    model: str | None,
    system_prompt: str | None,
    tools: tuple[str, ...],
    description: str | None,
) -> None:
    """Create an agent called NAME."""
    given = {
        "provider": provider,
        "model": model,
        "system_prompt": system_prompt,
        "description": description,
        "tools": list(tools) if tools else None,
    }
    agent = connection.client().agents.create(
        name=name, **{key: value for key, value in given.items() if value is not None}
    )
    console.print(
        f"Created agent [bold]{escape(agent.name)}[/] (id {agent.id}, "
        f"{escape(agent.provider)}/{escape(agent.model)})."
    )


@agents.command("delete")
@click.argument("agent")
@pass_connection
def delete_agent(connection: Connection, agent: str) -> None:
    """Delete AGENT (an id or a name); its conversations are kept."""
    client = connection.client()
    found = find_agent(client, agent)
    client.agents.delete(found.id)
    console.print(f"Deleted agent [bold]{escape(found.name)}[/] (id {found.id}).")
