"""Files: upload of each accepted type, refusals (type, size, quota, empty, corrupt), storage by
content hash (deduplicated, removed with the last row), download, lists, and owner-only access."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.resources import files as files_resource
from models import FileChunk, UploadedFile
from models.file_ingest import clean_filename
from models.file_storage import FileStorage, sha256_hex
from tests.factories import AGENTS, walk
from tests.files_helpers import FILES, make_pdf, upload, uploaded


@pytest.fixture
def storage(settings) -> FileStorage:
    return FileStorage(settings.files_dir)


@pytest.fixture
def app_with(settings):
    """Factory: an API whose settings differ from the test ones by ``changes``."""
    from api import create_app

    apps = []

    def make(**changes):
        app = create_app(dataclasses.replace(settings, **changes), test_config={"TESTING": True})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["roomcast"].engine.dispose()


def stored_files(storage: FileStorage) -> list[Path]:
    return sorted(p for p in storage.root.rglob("*") if p.is_file())


PDF = make_pdf([["Quarterly report", "Revenue grew by ten percent."], [], ["Appendix (tables)"]])

ACCEPTED = [
    ("notes.txt", b"Plain notes.\nSecond line.\n", "text/plain; charset=utf-8"),
    (
        "README.md",
        "# Title\n\nSome *Markdown* \u2014 ok.\n".encode(),
        "text/markdown; charset=utf-8",
    ),
    ("doc.markdown", b"## Heading\n\nbody\n", "text/markdown; charset=utf-8"),
    ("table.CSV", b"name,qty\napples,3\npears,5\n", "text/csv; charset=utf-8"),
    ("data.json", json.dumps({"k": [1, 2, {"x": "y"}]}).encode(), "application/json"),
    ("report.pdf", PDF, "application/pdf"),
]


@pytest.mark.parametrize(("name", "data", "content_type"), ACCEPTED)
def test_upload_each_accepted_type(client, user, storage, name, data, content_type):
    created = uploaded(client, user, name, data)
    assert created | {"id": 0, "created_at": 0} == {
        "id": 0,
        "created_at": 0,
        "name": name,
        "content_type": content_type,
        "size_bytes": len(data),
        "sha256": sha256_hex(data),
        "text_status": "ready",
        "page_count": 3 if name.endswith(".pdf") else None,
        "char_count": created["char_count"],
    }
    assert created["char_count"] > 0
    url = f"{FILES}/{created['id']}"
    assert client.get(url, headers=user.headers).json == created

    content = client.get(f"{url}/content", headers=user.headers)
    assert content.status_code == 200
    assert content.data == data
    assert content.headers["Content-Type"] == content_type
    assert content.headers["Content-Disposition"].startswith("attachment;")
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    # Named by content hash under ab/cd/, never by the client's name.
    sha = created["sha256"]
    assert storage.path_of(sha) == storage.root / sha[:2] / sha[2:4] / sha
    assert storage.path_of(sha).read_bytes() == data


def test_pdf_text_is_extracted_per_page(client, user, db):
    created = uploaded(client, user, "report.pdf", PDF)
    chunks = db.scalars(
        select(FileChunk).where(FileChunk.file_id == created["id"]).order_by(FileChunk.ordinal)
    ).all()
    text = "".join(c.text for c in chunks)
    assert "Revenue grew by ten percent." in text and "Appendix (tables)" in text
    assert {c.page for c in chunks} == {1, 3}  # page 2 is blank
    assert len(text) == created["char_count"]


def test_pdf_without_text_is_kept_as_empty(client, user):
    created = uploaded(client, user, "scan.pdf", make_pdf([[], []]))
    assert created["text_status"] == "empty"
    assert created["page_count"] == 2 and created["char_count"] == 0


def test_a_bom_is_fine_and_not_part_of_the_text(client, user, db):
    created = uploaded(client, user, "bom.txt", b"\xef\xbb\xbfhello")
    assert created["char_count"] == 5
    assert db.scalar(select(FileChunk.text).where(FileChunk.file_id == created["id"])) == "hello"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n...."),
        ("program.exe", b"MZ\x90\x00"),
        ("noextension", b"just text"),
        ("archive.txt.zip", b"PK\x03\x04"),
        ("renamed.txt", b"\x89PNG\r\n\x1a\n\x00\x00"),  # binary content under a text name
        ("utf16.txt", "hello".encode("utf-16")),
        ("fake.pdf", b"hello, I am not a PDF"),
    ],
)
def test_other_types_are_refused_with_415(client, user, storage, name, data):
    before = stored_files(storage)
    r = upload(client, user, name, data)
    assert r.status_code == 415, r.json
    assert r.json["code"] == "unsupported_media_type"
    assert ".txt" in r.json["message"] and ".pdf" in r.json["message"]
    assert stored_files(storage) == before


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.txt", b"", "empty"),
        ("empty.pdf", b"", "empty"),
        ("blank.md", b"  \n\t\n", "no text"),
        ("bom-only.txt", b"\xef\xbb\xbf", "no text"),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), "UTF-8"),
        ("broken.json", b'{"a": 1,', "JSON"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "PDF"),
        ("truncated.pdf", PDF[: len(PDF) // 2], "PDF"),
    ],
)
def test_empty_and_corrupt_files_are_422(client, user, db, storage, name, data, fragment):
    before = stored_files(storage)
    r = upload(client, user, name, data)
    assert r.status_code == 422, r.json
    assert r.json["code"] == "unreadable_file"
    assert fragment in r.json["message"] and r.json["errors"]["file"]
    assert stored_files(storage) == before
    assert not db.scalar(select(func.count()).where(UploadedFile.user_id == user.id))


def test_missing_file_field_is_422(client, user):
    for data in ({}, {"file": "not a file, a form field"}, {"other": (b"x", "a.txt")}):
        r = client.post(FILES, data=data, headers=user.headers, content_type="multipart/form-data")
        assert r.status_code == 422, r.json
        assert r.json["code"] == "validation_error"
    r = client.post(FILES, json={"file": "x"}, headers=user.headers)
    assert r.status_code == 422 and "file" in r.json["errors"]


def test_a_file_without_a_name_is_422(client, user):
    r = upload(client, user, "", b"text")
    assert r.status_code in (415, 422), r.json  # no name: nothing tells its type


def test_size_limit_lets_exactly_the_limit_through(app_with, user, storage, settings):
    client = app_with(max_upload_bytes=2000)
    assert upload(client, user, "exact.txt", b"a" * 2000).status_code == 201
    before = stored_files(storage)
    r = upload(client, user, "over.txt", b"b" * 2001)
    assert r.status_code == 413 and r.json["code"] == "payload_too_large"
    assert "2000" in r.json["message"]
    big = upload(client, user, "huge.txt", b"c" * 200_000)  # refused from its Content-Length
    assert big.status_code == 413 and big.json["code"] == "payload_too_large"
    assert stored_files(storage) == before


def test_uploads_may_exceed_the_json_body_limit_but_json_may_not(app_with, user):
    client = app_with(max_request_bytes=1024, max_upload_bytes=50_000)
    assert upload(client, user, "big.txt", b"word " * 8000).status_code == 201
    r = client.post(AGENTS, json={"name": "x" * 5000}, headers=user.headers)
    assert r.status_code == 413 and r.json["code"] == "payload_too_large"


def test_storage_quota(app_with, user, make_user, storage):
    client = app_with(user_storage_bytes=1000)
    first = uploaded(client, user, "a.txt", b"a" * 600)
    before = stored_files(storage)
    r = upload(client, user, "b.txt", b"b" * 500)
    assert r.status_code == 413
    assert r.json["code"] == "storage_quota_exceeded"
    assert (r.json["used_bytes"], r.json["quota_bytes"], r.json["file_bytes"]) == (600, 1000, 500)
    assert "600 of 1000 bytes" in r.json["message"]
    assert stored_files(storage) == before
    # Another user has a quota of their own.
    assert upload(client, make_user(), "b.txt", b"b" * 500).status_code == 201
    # Exactly full is allowed; deleting frees room.
    assert upload(client, user, "c.txt", b"c" * 400).status_code == 201
    assert upload(client, user, "d.txt", b"d").status_code == 413
    assert client.delete(f"{FILES}/{first['id']}", headers=user.headers).status_code == 204
    assert upload(client, user, "b.txt", b"b" * 500).status_code == 201


def test_zero_quota_is_unlimited(app_with, user):
    client = app_with(user_storage_bytes=0, max_upload_bytes=5000)
    for n in range(3):
        assert upload(client, user, f"{n}.txt", bytes([65 + n]) * 5000).status_code == 201


def test_same_bytes_are_stored_once_and_kept_until_the_last_row_goes(
    client, user, make_user, storage
):
    data = b"shared content " * 10
    other = make_user()
    mine = uploaded(client, user, "mine.txt", data)
    theirs = uploaded(client, other, "theirs.md", data)
    again = uploaded(client, user, "again.txt", data)
    assert mine["sha256"] == theirs["sha256"] == again["sha256"]
    path = storage.path_of(mine["sha256"])
    assert [p for p in stored_files(storage) if p.name == mine["sha256"]] == [path]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]

    for row, owner in ((mine, user), (theirs, other)):
        assert client.delete(f"{FILES}/{row['id']}", headers=owner.headers).status_code == 204
        assert path.read_bytes() == data
    content = client.get(f"{FILES}/{again['id']}/content", headers=user.headers)
    assert content.data == data
    assert client.delete(f"{FILES}/{again['id']}", headers=user.headers).status_code == 204
    assert not path.exists()


def test_an_upload_restores_missing_bytes(client, user, storage):
    data = b"restored bytes"
    first = uploaded(client, user, "one.txt", data)
    storage.remove(first["sha256"])  # e.g. a delete that raced ahead of this upload
    uploaded(client, user, "two.txt", data)
    assert storage.path_of(first["sha256"]).read_bytes() == data


def test_a_failed_upload_leaves_neither_row_nor_bytes(client, user, db, storage, monkeypatch):
    def broken_insert(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(files_resource, "insert", broken_insert)
    before = stored_files(storage)
    r = upload(client, user, "doomed.txt", b"never stored")
    assert r.status_code == 500 and r.json["code"] == "internal_error"
    assert stored_files(storage) == before
    assert not db.scalar(select(func.count()).where(UploadedFile.user_id == user.id))


def test_delete_removes_the_row_and_its_chunks(client, user, db):
    created = uploaded(client, user, "gone.txt", b"to be deleted " * 300)
    url = f"{FILES}/{created['id']}"
    assert client.delete(url, headers=user.headers).status_code == 204
    for path in (url, f"{url}/content"):
        r = client.get(path, headers=user.headers)
        assert r.status_code == 404 and r.json["code"] == "not_found"
    assert client.delete(url, headers=user.headers).status_code == 404
    assert db.get(UploadedFile, created["id"]) is None
    assert not db.scalar(select(func.count()).where(FileChunk.file_id == created["id"]))


HOSTILE = 'a"\r\nX-Evil: 1.txt'


def raw_upload(client, user, disposition_params: str, data: bytes):
    """A multipart body written by hand, to send a file name no test client would encode."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; '
        + disposition_params.encode()
        + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + data
        + b"\r\n--XyZ--\r\n"
    )
    return client.post(
        FILES,
        data=body,
        headers=user.headers,
        content_type="multipart/form-data; boundary=XyZ",
    )


def test_a_hostile_file_name_cannot_inject_headers(client, user):
    encoded = "a%22%0D%0AX-Evil%3A%201.txt"  # RFC 2231: the name with a quote and a CRLF
    r = raw_upload(client, user, f"filename*=UTF-8''{encoded}", b"data")
    assert r.status_code == 201, r.json
    assert r.json["name"] == 'a" X-Evil: 1.txt'  # control characters became spaces
    content = client.get(f"{FILES}/{r.json['id']}/content", headers=user.headers)
    assert "X-Evil" not in content.headers
    assert content.headers["Content-Disposition"] == (
        "attachment; filename=\"a_ X-Evil: 1.txt\"; filename*=UTF-8''a%22%20X-Evil%3A%201.txt"
    )
    # Even a stored name holding a line break gives a one-line header.
    header = files_resource.content_disposition(HOSTILE)
    assert "\r" not in header and "\n" not in header
    assert header == (
        "attachment; filename=\"a___X-Evil: 1.txt\"; filename*=UTF-8''a%22%0D%0AX-Evil%3A%201.txt"
    )


@pytest.mark.parametrize(
    ("name", "ascii_name"),
    [
        ("r\u00e9sum\u00e9 \u00fcber.txt", "resume uber.txt"),
        ("semi;colon\\back.txt", None),
        ("\u65e5\u672c.txt", ".txt"),
    ],
)
def test_download_disposition_is_safe(client, user, name, ascii_name):
    created = uploaded(client, user, name, b"data")
    r = client.get(f"{FILES}/{created['id']}/content", headers=user.headers)
    assert r.status_code == 200 and r.data == b"data"
    assert "X-Evil" not in r.headers
    disposition = r.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    kind, fallback, encoded = disposition.split("; ")
    assert kind == "attachment"
    assert fallback.startswith('filename="') and fallback.endswith('"')
    assert '"' not in fallback[len('filename="') : -1] and "\\" not in fallback
    assert encoded.startswith("filename*=UTF-8''")
    from urllib.parse import unquote

    assert unquote(encoded.removeprefix("filename*=UTF-8''")) == created["name"]
    if ascii_name is not None:
        assert fallback == f'filename="{ascii_name}"'


def test_a_stored_name_has_no_folders_or_control_characters(client, user):
    assert uploaded(client, user, "../../etc/passwd.txt", b"x")["name"] == "passwd.txt"
    assert clean_filename("C:\\Users\\me\\notes.md") == "notes.md"
    assert uploaded(client, user, "tab\there\x07.txt", b"x")["name"] == "tab here .txt"
    long = uploaded(client, user, "n" * 400 + ".txt", b"x")["name"]
    assert len(long) == 255 and long.endswith(".txt")


def test_list_pagination_order_and_q(client, user, make_user):
    names = ["Alpha.txt", "beta.md", "ALPHABET.csv", "gamma.json", "50%_off.txt"]
    data = {"gamma.json": b"{}"}
    ids = [uploaded(client, user, n, data.get(n, n.encode()))["id"] for n in names]
    uploaded(client, make_user(), "alpha.txt", b"someone else's")

    assert [f["id"] for f in walk(client, user, FILES, limit=2)] == ids
    assert [f["id"] for f in walk(client, user, FILES, limit=2, order="desc")] == ids[::-1]
    assert [f["name"] for f in walk(client, user, FILES, q="alpha")] == [
        "Alpha.txt",
        "ALPHABET.csv",
    ]
    assert [f["name"] for f in walk(client, user, FILES, q="%")] == ["50%_off.txt"]
    assert walk(client, user, FILES, q="_o") == walk(client, user, FILES, q="%_")
    assert walk(client, user, FILES, q="zzz") == []
    for bad in ({"limit": 0}, {"cursor": "nonsense"}, {"order": "up"}, {"q": ""}):
        r = client.get(FILES, query_string=bad, headers=user.headers)
        assert r.status_code == 422, bad


def test_another_users_file_is_not_found_on_every_route(client, user, make_user):
    created = uploaded(client, user, "private.txt", b"mine only")
    stranger = make_user()
    url = f"{FILES}/{created['id']}"
    for method, path in (("get", url), ("get", f"{url}/content"), ("delete", url)):
        r = getattr(client, method)(path, headers=stranger.headers)
        assert r.status_code == 404, (method, path)
        assert r.json == {
            "status": 404,
            "code": "not_found",
            "message": f"File {created['id']} not found.",
        }
    assert walk(client, stranger, FILES) == []
    assert client.get(url, headers=user.headers).status_code == 200
    missing = client.get(f"{FILES}/999999999", headers=stranger.headers)
    assert missing.json["message"] == "File 999999999 not found."


def test_files_need_a_token(client):
    assert client.get(FILES).status_code == 401
    r = client.post(FILES, data={}, content_type="multipart/form-data")
    assert r.status_code == 401


def test_openapi_documents_the_files_routes(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    post = spec["paths"]["/api/v1/files"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "413", "415", "422"} <= set(post["responses"])
    assert "/api/v1/files/{file_id}/content" in spec["paths"]
