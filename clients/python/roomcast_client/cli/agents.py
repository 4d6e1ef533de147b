"""``roomcast agents``: list, create and delete agents."""

from __future__ import annotations

import click

from .context import Connection, pass_connection, resource_group
from .lookup import delete_command
from .output import console, escape, print_table, when

agents = resource_group("agents", "Your agents (a table; see the commands to change them).")


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
    agent = connection.client().agents.create(
        name=name,
        provider=provider,
        model=model,
        system_prompt=system_prompt,
        description=description,
        tools=tools or None,
    )
    console.print(
        f"Created agent [bold]{escape(agent.name)}[/] (id {agent.id}, "
        f"{escape(f'{agent.provider}/{agent.model}')})."
    )


agents.add_command(delete_command("agent"))
