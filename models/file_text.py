"""Reading the extracted text of a user's file, a page at a time (the file_read tool).

The text is rebuilt from the chunks that overlap the requested range, so reading a page of a
large file never loads the whole text. Bytes on disk are never opened here: the text lives in
``file_chunks``, and nothing is ever reached through a path built from the caller's input.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from .base import MAX_ID
from .files import FileChunk, UploadedFile

MAX_READ_CHARS = 8000


class FileNotReadable(Exception):
    """The file cannot be read as asked; ``message`` is safe to show to the model and user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FileTextPage:
    file_id: int
    name: str
    offset: int  # first character returned
    text: str  # at most `length` characters
    total_chars: int
    next_offset: int | None  # None at the end


_FILES = UploadedFile.__table__
_CHUNKS = FileChunk.__table__

# The chunks overlapping [offset, end): the one holding `offset` (the last starting at or before
# it) and those starting before `end`; one range of the (file_id, char_start) index.
_OVERLAPPING_CHUNKS = (
    select(_CHUNKS.c.char_start, _CHUNKS.c.text)
    .where(
        _CHUNKS.c.file_id == bindparam("file_id"),
        _CHUNKS.c.char_start < bindparam("end"),
        _CHUNKS.c.char_start
        >= select(func.max(_CHUNKS.c.char_start))
        .where(
            _CHUNKS.c.file_id == bindparam("file_id"),
            _CHUNKS.c.char_start <= bindparam("offset"),
        )
        .scalar_subquery(),
    )
    .order_by(_CHUNKS.c.char_start)
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise FileNotReadable("Give the file's name (or its id).")
    if (
        "/" in name
        or "\\" in name
        or ".." in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or len(name) > 255
    ):
        raise FileNotReadable(
            f"{name[:100]!r} is not a file name: give the name of one of your uploaded files as"
            " listed (no folders), or its id."
        )
    return name


def read_file_text(
    db: Session,
    *,
    user_id: int,
    file_id: int | None = None,
    name: str | None = None,
    offset: int = 0,
    length: int = 4000,
) -> FileTextPage:
    """A page of the extracted text of one of ``user_id``'s files, by id or by exact name.

    By name, the newest of the user's files of that name. ``length`` is clamped to 1 to
    MAX_READ_CHARS. Raises FileNotReadable for an unknown (or another user's, or deleted) file,
    a path-like name, neither or both of ``file_id`` and ``name``, a negative offset or one
    past the end, and a file without text.
    """
    if (file_id is None) == (name is None):
        raise FileNotReadable("Give either the file's id or its name (exactly one of them).")
    if not _is_int(offset) or offset < 0:
        raise FileNotReadable("offset must be a whole number of characters, 0 or more.")
    if not _is_int(length):
        raise FileNotReadable("length must be a whole number of characters.")
    length = max(1, min(length, MAX_READ_CHARS))

    query = select(_FILES.c.id, _FILES.c.filename, _FILES.c.char_count, _FILES.c.text_status).where(
        _FILES.c.user_id == user_id, _FILES.c.deleted_at.is_(None)
    )
    if file_id is not None:
        if not _is_int(file_id) or not 1 <= file_id <= MAX_ID:
            raise FileNotReadable(f"There is no file with id {file_id!r}.")
        query = query.where(_FILES.c.id == file_id)
        missing = f"There is no file with id {file_id}."
    else:
        query = query.where(_FILES.c.filename == _check_name(name)).order_by(_FILES.c.id.desc())
        missing = f"There is no file named {name!r}."
    row = db.execute(query.limit(1)).first()
    if row is None:
        raise FileNotReadable(missing)

    total = row.char_count
    if row.text_status != "ready" or total == 0:
        raise FileNotReadable(
            f"{row.filename!r} has no text that could be extracted (for example a scanned PDF)."
        )
    if offset >= total:
        raise FileNotReadable(
            f"offset {offset} is past the end of {row.filename!r}, which has {total} characters."
        )
    end = min(offset + length, total)
    chunks = db.execute(
        _OVERLAPPING_CHUNKS, {"file_id": row.id, "offset": offset, "end": end}
    ).all()
    if not chunks:
        raise FileNotReadable(f"The text of {row.filename!r} is not available.")
    first_start = chunks[0].char_start
    joined = "".join(chunk.text for chunk in chunks)
    return FileTextPage(
        file_id=row.id,
        name=row.filename,
        offset=offset,
        text=joined[offset - first_start : end - first_start],
        total_chars=total,
        next_offset=end if end < total else None,
    )
