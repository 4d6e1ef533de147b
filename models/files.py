"""Files a user uploaded, and their extracted text in chunks, for the file_read and search tools."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, IdMixin, utcnow

# ready: the text was extracted (and is searchable); empty: a valid file without any text (a
# scanned PDF, a blank page), kept but never a search hit.
TEXT_STATUSES = ("ready", "empty")


class UploadedFile(IdMixin, Base):
    __tablename__ = "uploaded_files"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The client's name, cleaned (no folders, no control characters); never a path on disk.
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # The bytes are stored once per distinct content, under this hash (models/file_storage.py).
    sha256: Mapped[str] = mapped_column(String(64))
    text_status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    char_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    page_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Deleting a file removes its row; rows are never soft-deleted today, and readers still
    # leave out any row that has a deletion time.
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_uploaded_files_user_id_id", "user_id", "id"),
        # Whether other rows still need a content's bytes (deduplication, deletion).
        Index("ix_uploaded_files_sha256", "sha256"),
    )


class FileChunk(IdMixin, Base):
    """A piece of a file's extracted text (about 1,000 to 1,500 characters).

    The chunks of a file are contiguous: chunk n+1 starts where chunk n ends, so a range of the
    text is rebuilt from the chunks that overlap it. ``user_id`` is the file's owner, copied here
    so that search filters on it without a join.
    """

    __tablename__ = "file_chunks"

    file_id: Mapped[int] = mapped_column(ForeignKey("uploaded_files.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(BigInteger)
    char_end: Mapped[int] = mapped_column(BigInteger)
    page: Mapped[int | None] = mapped_column(Integer)  # 1-based PDF page; None for text files
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("file_id", "ordinal"),
        # Reading a range of the text: the chunk holding its start, and the ones after it.
        Index("ix_file_chunks_file_id_char_start", "file_id", "char_start"),
    )
