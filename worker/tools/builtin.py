"""The built-in tools: ``file_read`` and ``search`` over the session owner's own data."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from models.file_text import MAX_READ_CHARS, FileNotReadable, read_file_text
from models.search import search as search_index
from models.tools import FILE_READ, SEARCH

from .. import db
from .registry import Tool, ToolError, register

if TYPE_CHECKING:
    from .dispatch import ToolContext

DEFAULT_READ_CHARS = 4000
MAX_SEARCH_RESULTS = 10


def _file_read(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    with db.session() as s:
        try:
            page = read_file_text(
                s,
                user_id=context.user_id,
                file_id=arguments.get("file_id"),
                name=arguments.get("name"),
                offset=arguments.get("offset", 0),
                length=arguments.get("length", DEFAULT_READ_CHARS),
            )
        except FileNotReadable as exc:
            raise ToolError(exc.message) from None
    return asdict(page)


def _search(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    with db.session() as s:
        hits = search_index(
            s,
            user_id=context.user_id,
            session_id=context.session_id,
            query=arguments["query"],
            limit=arguments.get("limit", 5),
            before_message_id=context.before_message_id,
        )
    return {"results": [{k: v for k, v in asdict(h).items() if v is not None} for h in hits]}


register(
    Tool(
        name=FILE_READ,
        description=(
            "Read the text of one of the user's uploaded files, by id or by name, a page at a"
            f" time (at most {MAX_READ_CHARS} characters). The result says where the next page"
            " starts (next_offset, null at the end)."
        ),
        parameters={
            "type": "object",
            "properties": {
                "file_id": {"type": "integer", "minimum": 1},
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "offset": {"type": "integer", "minimum": 0, "default": 0},
                "length": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_READ_CHARS,
                    "default": DEFAULT_READ_CHARS,
                },
            },
            "oneOf": [{"required": ["file_id"]}, {"required": ["name"]}],
            "additionalProperties": False,
        },
        run=_file_read,
    )
)
register(
    Tool(
        name=SEARCH,
        description=(
            "Full-text search over the user's uploaded files and this conversation's earlier"
            " messages. Returns the best matches with a snippet; file matches give file_id"
            " and char_start, to read on with file_read."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SEARCH_RESULTS,
                    "default": 5,
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        run=_search,
    )
)
