"""What the CLI prints: rich tables on standard output, one-line errors on standard error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click
from rich.console import Console
from rich.markup import escape as escape  # re-exported for the commands
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class CommandFailed(click.ClickException):
    """A failure the user can act on, shown as one red line on standard error (exit code 1)."""

    def show(self, file: Any = None) -> None:
        # soft_wrap: one line however long, wrapped by the terminal if at all.
        err_console.print(f"[bold red]Error:[/] {escape(self.format_message())}", soft_wrap=True)


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    footer: Sequence[Any] | None = None,
) -> Table:
    """A table of ``rows``, and ``footer`` (a total) in bold below a line."""
    grid = Table(title=title, title_justify="left", title_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*_cells(row))
    if footer is not None:
        if grid.row_count:
            grid.rows[-1].end_section = True
        grid.add_row(*_cells(footer), style="bold")
    return grid


def _cells(row: Sequence[Any]) -> list[str]:
    return ["" if value is None else escape(str(value)) for value in row]


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    footer: Sequence[Any] | None = None,
) -> None:
    grid = table(title, columns, rows, footer)
    if grid.row_count:
        console.print(grid)
    else:
        console.print(f"[dim]No {title.lower()}.[/]")


def cost(value: Any) -> str:
    """A cost in USD as the API writes it (an exact decimal string), with a dollar sign."""
    try:
        return f"${Decimal(str(value)):f}"
    except (InvalidOperation, ValueError):
        return f"${value}"


def when(value: Any) -> str:
    """A timestamp, to the minute (the API answers ISO 8601)."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:16].replace("T", " ")


def size(count: int | None) -> str:
    if count is None:
        return ""
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
