"""Files: the upload form, and what a client reads back."""

from __future__ import annotations

import marshmallow as ma
from flask_smorest.fields import Upload

from models.file_ingest import ALLOWED_DESCRIPTION

from .base import ReadSchema, StrictSchema


class FileUploadSchema(StrictSchema):
    file = Upload(
        required=True,
        metadata={"description": f"The file. Accepted: {ALLOWED_DESCRIPTION}; text in UTF-8."},
    )


class FileSchema(ReadSchema):
    """An uploaded file and its extracted text's size."""

    name = ma.fields.String(
        attribute="filename",
        dump_only=True,
        metadata={"description": "The uploaded file's name.", "example": "handbook.pdf"},
    )
    content_type = ma.fields.String(dump_only=True, metadata={"example": "application/pdf"})
    size_bytes = ma.fields.Integer(dump_only=True, metadata={"example": 48213})
    sha256 = ma.fields.String(
        dump_only=True, metadata={"description": "SHA-256 of the bytes, hex.", "example": "9f86..."}
    )
    text_status = ma.fields.String(
        dump_only=True,
        metadata={
            "description": "ready: the text was extracted and is searchable; empty: the file has"
            " no extractable text (e.g. a scanned PDF), it is kept but never found by search.",
            "example": "ready",
        },
    )
    page_count = ma.fields.Integer(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Pages of a PDF; null for text files.", "example": 12},
    )
    char_count = ma.fields.Integer(
        dump_only=True,
        metadata={"description": "Characters of extracted text.", "example": 30518},
    )
