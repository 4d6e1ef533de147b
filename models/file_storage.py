"""Uploaded files' bytes on disk, stored once per distinct content and named by its SHA-256.

A content with hash ``abcdef...`` lives at ``<files_dir>/ab/cd/abcdef...``: the client's file name
never reaches the file system, and the same bytes uploaded twice (by anyone) are stored once.
Files are written to a temporary file in the same folder and renamed into place, so a reader
never sees half a file.

The bytes of a hash are needed while any ``uploaded_files`` row has that hash. An upload and a
delete of the same content are serialised by :func:`lock_content` (held until the transaction
ends): the upload takes it before making sure the bytes exist and keeps it until its row is
committed; the delete takes it after its row is gone, and removes the bytes only if no row is
left. Either the delete sees the new row and keeps the bytes, or the upload waits and then
writes them anew.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from .files import UploadedFile

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileStorage:
    """The content-addressed folder of uploaded bytes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_of(self, sha256: str) -> Path:
        """Where the content of ``sha256`` lives. Only a well-formed hash is ever a path."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def write(self, sha256: str, data: bytes) -> bool:
        """Store ``data`` under its hash unless already there; True when this call wrote it.

        The caller holds :func:`lock_content` for the hash.
        """
        if sha256_hex(data) != sha256:
            raise ValueError("the data does not have this hash")
        path = self.path_of(sha256)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def read(self, sha256: str) -> bytes:
        """The stored bytes; FileNotFoundError when they are missing."""
        return self.path_of(sha256).read_bytes()

    def remove(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)


def lock_content(db: Session, sha256: str) -> None:
    """Serialise the uploads and deletes of one content until the transaction ends.

    PostgreSQL: a transaction-level advisory lock keyed by the hash (other contents are not
    held up). SQLite has a single writer: any write statement takes the database's write lock
    until the commit, so a no-op UPDATE is enough.
    """
    if db.get_bind().dialect.name == "postgresql":
        key = int(sha256[:16], 16) - 2**63  # the first 64 bits, as PostgreSQL's signed bigint
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        db.execute(
            text("UPDATE uploaded_files SET id = id WHERE sha256 = :sha256"), {"sha256": sha256}
        )


def content_in_use(db: Session, sha256: str) -> bool:
    """Whether any file row still refers to the content ``sha256``."""
    return bool(
        db.scalar(
            select(func.count()).select_from(UploadedFile).where(UploadedFile.sha256 == sha256)
        )
    )


def release_content(db: Session, storage: FileStorage, sha256: str) -> bool:
    """Remove the bytes of ``sha256`` if no row refers to them any more (after a delete).

    Runs in its own transaction, after the deleting one committed; True when the bytes went.
    """
    lock_content(db, sha256)
    try:
        if content_in_use(db, sha256):
            return False
        storage.remove(sha256)
        return True
    finally:
        db.rollback()  # nothing was written; ends the transaction and its lock
