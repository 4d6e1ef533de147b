"""``roomcast files``: upload files for the agents' tools, list and delete them."""

from __future__ import annotations

from pathlib import Path

import click

from .. import APIError
from .context import Connection, describe, pass_connection, resource_group
from .output import console, err_console, escape, print_table, size, when

files = resource_group("files", "Your uploaded files (a table; see the commands to change them).")


@files.command("list")
@pass_connection
def list_files(connection: Connection) -> None:
    """List your files."""
    rows = [
        (f.id, f.name, f.content_type, size(f.size_bytes), f.text_status, when(f.created_at))
        for f in connection.client().files.list()
    ]
    print_table("Files", ("id", "name", "type", "size", "text", "uploaded"), rows)


@files.command("upload")
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@pass_connection
def upload(connection: Connection, paths: tuple[Path, ...]) -> None:
    """Upload PATHS (text, Markdown, CSV, JSON or PDF) for the agents' file_read and search
    tools. Each is tried; the command fails if any was refused."""
    client = connection.client()
    refused = 0
    for path in paths:
        try:
            uploaded = client.files.upload(path)
        except APIError as exc:
            refused += 1
            err_console.print(
                f"[bold red]Error:[/] {escape(str(path))}: {escape(describe(exc))}", soft_wrap=True
            )
            continue
        console.print(
            f"Uploaded [bold]{escape(uploaded.name)}[/] (id {uploaded.id}, "
            f"{size(uploaded.size_bytes)}, text {uploaded.text_status})."
        )
    if refused:
        raise click.exceptions.Exit(1)


@files.command("delete")
@click.argument("file_id", metavar="ID", type=int)
@pass_connection
def delete_file(connection: Connection, file_id: int) -> None:
    """Delete the file with this ID."""
    connection.client().files.delete(file_id)
    console.print(f"Deleted file {file_id}.")
