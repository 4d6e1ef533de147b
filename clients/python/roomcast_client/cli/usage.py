"""``roomcast usage``: tokens and cost of your LLM calls, in total or per group."""

from __future__ import annotations

import click

from ..models import UsageGroup, UsageSums
from .context import Connection, pass_connection
from .output import console, cost, print_table

GROUPS = ("agent", "room", "model", "day")


@click.command()
@click.option(
    "--by",
    "group_by",
    type=click.Choice(GROUPS),
    help="Split the totals per agent, room, model or day.",
)
@click.option("--since", help="From this date or time on (ISO 8601, UTC unless it says).")
@click.option("--until", help="Before this date or time (ISO 8601).")
@pass_connection
def usage(
    connection: Connection, group_by: str | None, since: str | None, until: str | None
) -> None:
    """Your usage: LLM calls, tokens and cost (USD)."""
    filters = {"group_by": group_by, "since": since, "until": until}
    report = connection.client().usage.get(**{k: v for k, v in filters.items() if v is not None})
    columns = ("calls", "prompt tokens", "completion tokens", "total tokens", "cost")
    rows = [(_label(group, group_by), *_sums(group)) for group in report.groups]
    title = f"Usage by {group_by}" if group_by else "Usage"
    print_table(title, (group_by or "", *columns), rows, footer=("total", *_sums(report.totals)))
    if report.truncated:
        console.print("[dim]Only the largest groups are shown; the total counts them all.[/]")


def _sums(sums: UsageSums) -> tuple[object, ...]:
    return (
        sums.calls,
        sums.prompt_tokens,
        sums.completion_tokens,
        sums.total_tokens,
        cost(sums.cost),
    )


def _label(group: UsageGroup, group_by: str | None) -> str:
    if group_by == "model":
        return f"{group.provider}/{group.model}"
    if group_by == "day":
        return str(group.day)
    if group.name is None:
        return "standalone" if group_by == "room" else "(selector)"
    return f"{group.name} (deleted)" if group.deleted else group.name
