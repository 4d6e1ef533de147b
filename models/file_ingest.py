"""Accepting an uploaded file: its type (from the name's extension and the content), its text,
and that text cut into chunks for reading and search.

Extraction runs at upload, synchronously: simple, and bounded by the upload size (a 10 MB text
file is decoded and chunked in well under a second). A file whose type or content is refused
raises :class:`UnsupportedFile` (answer 415) or :class:`UnreadableFile` (answer 422).
"""

from __future__ import annotations

import io
import json
import logging
import re
import unicodedata
from dataclasses import dataclass

log = logging.getLogger(__name__)

TEXT_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".markdown": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
}
PDF_TYPE = "application/pdf"
ALLOWED_EXTENSIONS = (*TEXT_TYPES, ".pdf")
ALLOWED_DESCRIPTION = (
    "plain text (.txt), Markdown (.md, .markdown), CSV (.csv), JSON (.json), PDF (.pdf)"
)

MAX_NAME_LENGTH = 255
# A chunk ends at a paragraph, sentence or word boundary between these sizes (in characters).
CHUNK_MIN_CHARS = 1000
CHUNK_MAX_CHARS = 1500
# A small PDF can inflate into a great deal of text (compressed streams); past this it is refused.
MAX_TEXT_CHARS = 20_000_000
PDF_PAGE_SEPARATOR = "\n\n"

_BINARY_SIGNATURES = (b"%PDF-", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[.!?;:\u2026][\"'\u201d\u2019)\]]*\s+")
_SPACE = re.compile(r"\s+")


class UnsupportedFile(Exception):
    """Not one of the accepted types (by name or by content): 415."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnreadableFile(Exception):
    """Of an accepted type but empty or corrupt: 422."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    char_start: int
    char_end: int
    page: int | None
    text: str


@dataclass(frozen=True)
class ExtractedFile:
    name: str
    content_type: str
    text_status: str  # "ready" or "empty"
    char_count: int
    page_count: int | None
    chunks: list[TextChunk]


def clean_filename(raw: str | None) -> str:
    """The name to keep for an upload: its last path part, without control characters.

    It is only ever shown and matched, never used as a path.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in name)
    name = " ".join(name.split())
    if len(name) > MAX_NAME_LENGTH:  # shortened, keeping the extension that gives the type
        keep = len(extension_of(name)) if len(extension_of(name)) <= 16 else 0
        name = name[: MAX_NAME_LENGTH - keep] + name[len(name) - keep :]
    if not name or name in {".", ".."}:
        raise UnreadableFile("The upload has no file name; send one with an extension.")
    return name


def extension_of(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return "." + ext.lower() if dot else ""


def extract(name: str, data: bytes) -> ExtractedFile:
    """Check ``data`` against the type its name claims and extract its text in chunks."""
    ext = extension_of(name)
    if ext not in ALLOWED_EXTENSIONS:
        raise UnsupportedFile(f"{name!r} is not an accepted type; accepted: {ALLOWED_DESCRIPTION}.")
    if not data:
        raise UnreadableFile(f"{name!r} is empty.")
    if ext == ".pdf":
        return _extract_pdf(name, data)
    return _extract_text(name, ext, data)


def _extract_text(name: str, ext: str, data: bytes) -> ExtractedFile:
    if b"\x00" in data or data.startswith(_BINARY_SIGNATURES):
        raise UnsupportedFile(
            f"{name!r} does not hold text (binary content, or UTF-16); accepted: "
            f"{ALLOWED_DESCRIPTION}, text in UTF-8."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name!r} is not valid UTF-8 (byte {exc.start}); save it as UTF-8 and upload it again."
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise UnreadableFile(f"{name!r} has no text (it is empty or only whitespace).")
    if ext == ".json":
        try:
            json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UnreadableFile(f"{name!r} is not valid JSON: {exc}.") from None
    return ExtractedFile(
        name=name,
        content_type=TEXT_TYPES[ext],
        text_status="ready",
        char_count=len(text),
        page_count=None,
        chunks=chunk_text(text),
    )


def _extract_pdf(name: str, data: bytes) -> ExtractedFile:
    if not data.startswith(b"%PDF-"):
        raise UnsupportedFile(
            f"{name!r} is not a PDF (it does not start with %PDF-); accepted: "
            f"{ALLOWED_DESCRIPTION}."
        )
    from pypdf import PdfReader  # imported here: only uploads need it

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile(f"{name!r} is an encrypted PDF; upload it without a password.")
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            page_text = _clean_pdf_text(page.extract_text() or "")
            total += len(page_text) + len(PDF_PAGE_SEPARATOR)
            if total > MAX_TEXT_CHARS:
                raise UnreadableFile(
                    f"{name!r} holds more than {MAX_TEXT_CHARS:,} characters of text."
                )
            pages.append(page_text)
    except UnreadableFile:
        raise
    except Exception as exc:  # pypdf raises many kinds on broken input
        log.info("unreadable PDF %r: %s: %s", name, type(exc).__name__, exc)
        raise UnreadableFile(
            f"{name!r} is not a readable PDF (it is damaged or incomplete)."
        ) from None
    if not pages:
        raise UnreadableFile(f"{name!r} is a PDF without pages.")
    chunks: list[TextChunk] = []
    offset = 0
    with_text = [(number, text) for number, text in enumerate(pages, start=1) if text]
    for index, (number, text) in enumerate(with_text):
        if index < len(with_text) - 1:
            text += PDF_PAGE_SEPARATOR
        chunks += chunk_text(text, page=number, start=offset, first_ordinal=len(chunks))
        offset += len(text)
    return ExtractedFile(
        name=name,
        content_type=PDF_TYPE,
        text_status="ready" if chunks else "empty",
        char_count=offset,
        page_count=len(pages),
        chunks=chunks,
    )


def _clean_pdf_text(text: str) -> str:
    # Databases refuse NUL characters; lone surrogates cannot be stored as UTF-8.
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return text


def chunk_text(
    text: str, *, page: int | None = None, start: int = 0, first_ordinal: int = 0
) -> list[TextChunk]:
    """``text`` cut into contiguous chunks of CHUNK_MIN_CHARS to CHUNK_MAX_CHARS characters.

    Each cut is at the last paragraph break in that window, else the last sentence end, else
    the last whitespace, else (one long word) at the maximum. Offsets count from ``start``.
    """
    chunks: list[TextChunk] = []
    position = 0
    while position < len(text):
        end = _cut(text, position)
        chunks.append(
            TextChunk(
                ordinal=first_ordinal + len(chunks),
                char_start=start + position,
                char_end=start + end,
                page=page,
                text=text[position:end],
            )
        )
        position = end
    return chunks


def _cut(text: str, position: int) -> int:
    if len(text) - position <= CHUNK_MAX_CHARS:
        return len(text)
    low, high = position + CHUNK_MIN_CHARS, position + CHUNK_MAX_CHARS
    window = text[low:high]
    for boundary in (_PARAGRAPH, _SENTENCE, _SPACE):
        last = None
        for last in boundary.finditer(window):  # noqa: B007 - the last match is wanted
            pass
        if last is not None:
            return low + last.end()
    return high
