"""Files: a user's uploaded documents (text, Markdown, CSV, JSON, PDF), for the file_read and
search tools. Owner-only: another user's file is a 404, like a missing one."""

from __future__ import annotations

import logging
import unicodedata
from urllib.parse import quote

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import delete, func, insert, select

from models import FileChunk, UploadedFile, User
from models.db import lock_row
from models.file_ingest import (
    ALLOWED_DESCRIPTION,
    ExtractedFile,
    UnreadableFile,
    UnsupportedFile,
    clean_filename,
    extract,
)
from models.file_storage import FileStorage, lock_content, release_content, sha256_hex

from ..auth import current_user_id
from ..errors import error_response
from ..ownership import get_owned
from ..pagination import invalid_list_args, page_schema, paginate
from ..quotas import limit_reached_response, require_below_cap
from ..schemas.base import NameSearchArgsSchema
from ..schemas.files import FileSchema, FileUploadSchema
from ..state import get_db, state

log = logging.getLogger(__name__)

blp = Blueprint(
    "files",
    __name__,
    url_prefix="/api/v1/files",
    description="Your files: uploaded documents whose text agents can read and search.",
)

# Room for the multipart framing around the file (boundaries, part headers, the file name).
MULTIPART_OVERHEAD_BYTES = 64 * 1024

NOT_FOUND = error_response(
    blp, 404, "No such file (or not yours).", {"not_found": "File 3 not found."}
)


def _file_or_404(file_id: int) -> UploadedFile:
    row = get_owned(UploadedFile, file_id)
    if row is None:
        abort(404, message=f"File {file_id} not found.")
    return row


def _storage() -> FileStorage:
    return FileStorage(state().settings.files_dir)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


@blp.before_request
def _upload_size_limit() -> None:
    """Uploads may be as large as ROOMCAST_MAX_UPLOAD_BYTES (plus the multipart framing); every
    other request keeps the app's JSON body limit (ROOMCAST_MAX_REQUEST_BYTES)."""
    if request.method != "POST" or request.endpoint != "files.Files":
        return
    limit = state().settings.max_upload_bytes
    request.max_content_length = limit + MULTIPART_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > request.max_content_length:
        abort(413, message=f"The file is larger than the upload limit of {limit} bytes.")


def _store(data: bytes, extracted: ExtractedFile) -> UploadedFile:
    """Write the file's row, chunks and bytes, and commit; the quota is checked first.

    Nothing is left half-written: bytes this call stored are removed again if the row is not
    committed, and bytes are never removed while a row refers to them (lock_content).
    """
    settings = state().settings
    db = get_db()
    user_id = current_user_id()
    sha256 = sha256_hex(data)
    storage = _storage()
    # One upload at a time per user, so two concurrent ones cannot both fit the last room.
    lock_row(db, User, user_id)
    require_below_cap(db, UploadedFile, user_locked=True)
    quota = settings.user_storage_bytes
    if quota:
        used = int(  # PostgreSQL sums bigints as numeric
            db.scalar(
                select(func.coalesce(func.sum(UploadedFile.size_bytes), 0)).where(
                    UploadedFile.user_id == user_id, UploadedFile.deleted_at.is_(None)
                )
            )
        )
        if used + len(data) > quota:
            db.rollback()
            abort(
                413,
                code="storage_quota_exceeded",
                message=(
                    f"This file ({len(data)} bytes) does not fit in your storage: you use"
                    f" {used} of {quota} bytes ({_mib(used)} of {_mib(quota)}). Delete files to"
                    " make room."
                ),
                used_bytes=used,
                quota_bytes=quota,
                file_bytes=len(data),
            )
    lock_content(db, sha256)
    wrote = False
    try:
        wrote = storage.write(sha256, data)
        row = UploadedFile(
            user_id=user_id,
            filename=extracted.name,
            content_type=extracted.content_type,
            size_bytes=len(data),
            sha256=sha256,
            text_status=extracted.text_status,
            char_count=extracted.char_count,
            page_count=extracted.page_count,
        )
        db.add(row)
        db.flush()
        if extracted.chunks:
            db.execute(
                insert(FileChunk),
                [
                    {
                        "file_id": row.id,
                        "user_id": user_id,
                        "ordinal": chunk.ordinal,
                        "char_start": chunk.char_start,
                        "char_end": chunk.char_end,
                        "page": chunk.page,
                        "text": chunk.text,
                    }
                    for chunk in extracted.chunks
                ],
            )
        db.commit()
    except BaseException:
        if wrote:
            storage.remove(sha256)  # still under lock_content: no committed row needs them
        db.rollback()
        raise
    if not storage.exists(sha256):
        # Cannot happen while lock_content holds; checked anyway, as the bytes are the file.
        log.warning("bytes of %s vanished after the upload of file %s; rewriting", sha256, row.id)
        storage.write(sha256, data)
    return row


@blp.route("")
class Files(MethodView):
    @blp.arguments(FileUploadSchema, location="files")
    @blp.response(201, FileSchema)
    @limit_reached_response(blp, UploadedFile)
    @error_response(
        blp,
        413,
        "The file is over the upload limit, or over your storage quota.",
        {
            "payload_too_large": "The file is larger than the upload limit of 10485760 bytes.",
            "storage_quota_exceeded": "This file (2048 bytes) does not fit in your storage: you"
            " use 104857000 of 104857600 bytes (100.0 MiB of 100.0 MiB). Delete files to make"
            " room.",
        },
    )
    @error_response(
        blp,
        415,
        "Not an accepted type (by the name's extension or by the content).",
        {
            "unsupported_media_type": f"'photo.png' is not an accepted type; accepted: "
            f"{ALLOWED_DESCRIPTION}."
        },
    )
    @error_response(
        blp,
        422,
        "No file, or a file that is empty or damaged (invalid UTF-8 or JSON, unreadable PDF).",
        {
            "validation_error": "The request is invalid; see errors for each field.",
            "unreadable_file": "'notes.json' is not valid JSON: Expecting value: line 1 column 1"
            " (char 0).",
        },
    )
    def post(self, form):
        """Upload a file

        Send `multipart/form-data` with the file in the field `file`. Its type comes from the
        name's extension and is checked against the content. The text is extracted at once:
        the answer says how much (`char_count`, `page_count`) and whether there was any
        (`text_status`). A user may have ROOMCAST_MAX_FILES_PER_USER files (409 `limit_reached`
        beyond).
        """
        upload = form["file"]
        limit = state().settings.max_upload_bytes
        data = upload.stream.read(limit + 1)
        if len(data) > limit:
            abort(413, message=f"The file is larger than the upload limit of {limit} bytes.")
        try:
            extracted = extract(clean_filename(upload.filename), data)
        except UnsupportedFile as exc:
            abort(415, message=exc.message)
        except UnreadableFile as exc:
            abort(422, message=exc.message, code="unreadable_file", errors={"file": [exc.message]})
        return _store(data, extracted)

    @blp.arguments(NameSearchArgsSchema, location="query")
    @blp.response(200, page_schema(FileSchema))
    @invalid_list_args(blp)
    def get(self, args):
        """List my files

        `q` keeps the files whose name contains it (ignoring case).
        """
        stmt = select(UploadedFile).where(
            UploadedFile.user_id == current_user_id(), UploadedFile.deleted_at.is_(None)
        )
        if args.get("q"):
            stmt = stmt.where(UploadedFile.filename.icontains(args["q"], autoescape=True))
        return paginate(get_db(), stmt, [UploadedFile.id], args)


@blp.route("/<int:file_id>")
class FileById(MethodView):
    @blp.response(200, FileSchema)
    @NOT_FOUND
    def get(self, file_id):
        """Get a file's details"""
        return _file_or_404(file_id)

    @blp.response(204)
    @NOT_FOUND
    def delete(self, file_id):
        """Delete a file

        Its text leaves search at once; its bytes are removed unless another file has the
        same content.
        """
        _file_or_404(file_id)
        db = get_db()
        db.execute(delete(FileChunk).where(FileChunk.file_id == file_id))
        # One statement decides, also against a concurrent delete of the same file.
        sha256 = db.scalar(
            delete(UploadedFile)
            .where(UploadedFile.id == file_id, UploadedFile.user_id == current_user_id())
            .returning(UploadedFile.sha256)
        )
        if sha256 is None:
            db.rollback()
            abort(404, message=f"File {file_id} not found.")
        db.commit()
        release_content(db, _storage(), sha256)


def content_disposition(name: str) -> str:
    """``attachment`` with the name twice: an ASCII fallback and the UTF-8 form (RFC 6266).

    Neither can carry a quote, a backslash or a line break into the header.
    """
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = "".join(c if c.isprintable() and c not in '"\\;' else "_" for c in fallback)
    return f"attachment; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{quote(name, safe='')}"


@blp.route("/<int:file_id>/content")
class FileContent(MethodView):
    @blp.response(
        200,
        description="The file's bytes, as uploaded.",
        content_type="application/octet-stream",
    )
    @NOT_FOUND
    def get(self, file_id):
        """Download a file

        The original bytes, with the file's content type, as an attachment.
        """
        row = _file_or_404(file_id)
        try:
            data = _storage().read(row.sha256)
        except FileNotFoundError:
            log.error("the bytes of file %s (%s) are missing", row.id, row.sha256)
            abort(500, message=f"The content of file {row.id} is missing.", code="content_missing")
        response = Response(data, status=200, content_type=row.content_type)
        response.headers["Content-Disposition"] = content_disposition(row.filename)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "private, no-cache"
        response.set_etag(row.sha256)
        return response
