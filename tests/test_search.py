"""Reading a file's text a page at a time (read_file_text), the chunking behind it, and full-text
search over files and a session's shared messages, on the test database's own engine."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import ChatSession, FileChunk, Message, Turn
from models.file_ingest import CHUNK_MAX_CHARS, CHUNK_MIN_CHARS, chunk_text
from models.file_text import MAX_READ_CHARS, FileNotReadable, read_file_text
from models.search import MAX_RESULTS, SearchHit, search
from tests.files_helpers import FILES, make_pdf, uploaded

FILLER = (
    "The committee met on Tuesday to review the budget. Several items were postponed. "
    "Coffee was served at ten. The minutes were approved without changes.\n\n"
)


def long_text(paragraphs: int = 60) -> str:
    return "".join(f"Paragraph {n}. {FILLER}" for n in range(paragraphs))


# --- chunking ---------------------------------------------------------------------------------


def test_chunks_are_contiguous_and_cut_at_boundaries():
    text = long_text()
    chunks = chunk_text(text)
    assert "".join(c.text for c in chunks) == text
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.char_end == after.char_start
        assert CHUNK_MIN_CHARS <= len(before.text) <= CHUNK_MAX_CHARS
        assert before.text.endswith("\n\n")  # a paragraph break was in reach
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_chunks_fall_back_to_sentences_words_and_hard_cuts():
    sentences = "This is one sentence that goes on. " * 100
    assert all(c.text.endswith(". ") for c in chunk_text(sentences)[:-1])
    words = "word " * 1000
    assert all(c.text.endswith(" ") for c in chunk_text(words)[:-1])
    blob = "x" * 4000
    assert [len(c.text) for c in chunk_text(blob)] == [1500, 1500, 1000]


# --- read_file_text ---------------------------------------------------------------------------


@pytest.fixture
def book(client, user):
    text = long_text()
    return uploaded(client, user, "book.txt", text.encode()), text


def test_reading_a_file_page_by_page(db, user, book):
    created, text = book
    page = read_file_text(db, user_id=user.id, file_id=created["id"])
    assert (page.file_id, page.name, page.offset) == (created["id"], "book.txt", 0)
    assert page.text == text[:4000] and page.total_chars == len(text)
    assert page.next_offset == 4000

    pieces, offset = [], 0
    while offset is not None:
        page = read_file_text(
            db, user_id=user.id, file_id=created["id"], offset=offset, length=3333
        )
        pieces.append(page.text)
        offset = page.next_offset
    assert "".join(pieces) == text

    middle = read_file_text(db, user_id=user.id, file_id=created["id"], offset=1234, length=2500)
    assert middle.text == text[1234:3734] and middle.next_offset == 3734
    last = read_file_text(db, user_id=user.id, file_id=created["id"], offset=len(text) - 5)
    assert last.text == text[-5:] and last.next_offset is None


def test_length_is_clamped(db, user, book):
    created, text = book
    big = read_file_text(db, user_id=user.id, file_id=created["id"], length=10**9)
    assert len(big.text) == MAX_READ_CHARS and big.next_offset == MAX_READ_CHARS
    for tiny in (0, -5):
        page = read_file_text(db, user_id=user.id, file_id=created["id"], length=tiny)
        assert page.text == text[:1]


def test_reading_by_name_takes_the_newest(client, db, user):
    uploaded(client, user, "dup.md", b"old version")
    newer = uploaded(client, user, "dup.md", b"new version")
    page = read_file_text(db, user_id=user.id, name="dup.md")
    assert page.file_id == newer["id"] and page.text == "new version"


def test_a_pdf_reads_as_its_text(client, db, user):
    created = uploaded(client, user, "r.pdf", make_pdf([["Hello there"], ["Page two"]]))
    page = read_file_text(db, user_id=user.id, name="r.pdf")
    assert page.file_id == created["id"] and page.text == "Hello there\n\nPage two"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one"),
        ({"file_id": 1, "name": "a.txt"}, "exactly one"),
        ({"file_id": 999_999_999}, "no file with id"),
        ({"file_id": 0}, "no file with id"),
        ({"file_id": 2**70}, "no file with id"),
        ({"file_id": "1"}, "no file with id"),
        ({"name": "missing.txt"}, "no file named"),
        ({"name": "../book.txt"}, "not a file name"),
        ({"name": "dir/book.txt"}, "not a file name"),
        ({"name": "dir\\book.txt"}, "not a file name"),
        ({"name": "..."}, "not a file name"),
        ({"name": "book.txt\x00"}, "not a file name"),
        ({"name": "book\n.txt"}, "not a file name"),
        ({"name": "/etc/passwd"}, "not a file name"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
    ],
)
def test_refusals_are_clear(db, user, book, kwargs, fragment):
    with pytest.raises(FileNotReadable) as excinfo:
        read_file_text(db, user_id=user.id, **kwargs)
    assert fragment in excinfo.value.message.lower()


def test_offsets_are_checked(db, user, book):
    created, text = book
    for offset, fragment in ((-1, "0 or more"), (len(text), "past the end"), (10**12, "past")):
        with pytest.raises(FileNotReadable) as excinfo:
            read_file_text(db, user_id=user.id, file_id=created["id"], offset=offset)
        assert fragment in excinfo.value.message
    with pytest.raises(FileNotReadable):
        read_file_text(db, user_id=user.id, file_id=created["id"], offset=True)


def test_another_users_file_reads_like_a_missing_one(db, make_user, book):
    created, _ = book
    stranger = make_user()
    with pytest.raises(FileNotReadable) as by_id:
        read_file_text(db, user_id=stranger.id, file_id=created["id"])
    with pytest.raises(FileNotReadable) as missing:
        read_file_text(db, user_id=stranger.id, file_id=999_999_999)
    assert by_id.value.message == missing.value.message.replace("999999999", str(created["id"]))
    with pytest.raises(FileNotReadable) as by_name:
        read_file_text(db, user_id=stranger.id, name="book.txt")
    assert by_name.value.message == "There is no file named 'book.txt'."


def test_a_deleted_file_cannot_be_read(client, db, user, book):
    created, _ = book
    assert client.delete(f"{FILES}/{created['id']}", headers=user.headers).status_code == 204
    for kwargs in ({"file_id": created["id"]}, {"name": "book.txt"}):
        with pytest.raises(FileNotReadable):
            read_file_text(db, user_id=user.id, **kwargs)


def test_a_file_without_text_says_so(client, db, user):
    uploaded(client, user, "scan.pdf", make_pdf([[]]))
    with pytest.raises(FileNotReadable) as excinfo:
        read_file_text(db, user_id=user.id, name="scan.pdf")
    assert "no text" in excinfo.value.message


def test_reading_loads_only_the_overlapping_chunks(db, user, book):
    created, text = book
    chunks = db.scalars(
        select(FileChunk).where(FileChunk.file_id == created["id"]).order_by(FileChunk.ordinal)
    ).all()
    third = chunks[3]
    page = read_file_text(
        db, user_id=user.id, file_id=created["id"], offset=third.char_start + 1, length=10
    )
    assert page.text == third.text[1:11]


# --- search -----------------------------------------------------------------------------------

TARGET = (
    "Zebras migrate across the Serengeti every year. The zebra migration follows the rains, "
    "and zebra herds travel with wildebeest during the migration season.\n\n"
)


def test_the_best_chunk_comes_first(client, db, user, make_user):
    text = long_text(20) + TARGET + long_text(20)
    created = uploaded(client, user, "safari.txt", text.encode())
    uploaded(client, user, "other.md", b"A single zebra was seen once, far away.")
    uploaded(client, make_user(), "theirs.txt", (TARGET * 3).encode())  # not the caller's

    hits = search(db, user_id=user.id, session_id=None, query="zebra migration")
    assert hits and all(isinstance(h, SearchHit) for h in hits)
    best = hits[0]
    assert (best.kind, best.file_id, best.filename) == ("file", created["id"], "safari.txt")
    chunk = db.scalar(
        select(FileChunk).where(FileChunk.file_id == created["id"], FileChunk.ordinal == best.chunk)
    )
    assert "zebra migration" in chunk.text and best.char_start == chunk.char_start
    assert "zebra" in best.snippet.lower() and len(best.snippet) <= 301
    assert [h.filename for h in hits] == ["safari.txt", "other.md"]
    assert hits[0].score > hits[1].score > 0
    # The hit points where file_read can read.
    page = read_file_text(db, user_id=user.id, file_id=best.file_id, offset=best.char_start)
    assert page.text.startswith(chunk.text[:100])


def test_pdf_hits_carry_their_page(client, db, user):
    created = uploaded(
        client,
        user,
        "atlas.pdf",
        make_pdf([["Nothing here"], ["The capybara is the largest rodent."]]),
    )
    (hit,) = search(db, user_id=user.id, session_id=None, query="capybara")
    assert (hit.file_id, hit.page) == (created["id"], 2)


def test_deleted_files_are_not_found(client, db, user):
    created = uploaded(client, user, "temp.txt", b"ephemeral axolotl facts")
    assert search(db, user_id=user.id, session_id=None, query="axolotl")
    assert client.delete(f"{FILES}/{created['id']}", headers=user.headers).status_code == 204
    assert search(db, user_id=user.id, session_id=None, query="axolotl") == []


@pytest.fixture
def conversation(db, user, make_agent):
    """A session of ``user`` with shared and private messages; returns (session id, messages)."""
    agent = make_agent(user)
    session = ChatSession(user_id=user.id, agent_id=agent.id)
    db.add(session)
    db.flush()
    turn = Turn(session_id=session.id, user_id=user.id, status="completed")
    db.add(turn)
    db.flush()
    rows = [
        ("user", None, "shared", "What do narwhals eat?"),
        ("assistant", agent.id, "private", "narwhal secret tool notes"),
        ("assistant", agent.id, "shared", "Narwhals eat fish, squid and shrimp."),
        ("user", None, "shared", "And where do narwhals live?"),
    ]
    messages = []
    for step, (role, agent_id, visibility, content) in enumerate(rows):
        message = Message(
            session_id=session.id,
            turn_id=turn.id,
            step=step,
            role=role,
            agent_id=agent_id,
            visibility=visibility,
            content=content,
        )
        db.add(message)
        db.flush()
        messages.append(message)
    db.commit()
    return session.id, messages


def test_search_finds_shared_messages_of_the_session(db, user, conversation, make_user):
    session_id, messages = conversation
    hits = search(db, user_id=user.id, session_id=session_id, query="narwhal", limit=10)
    assert {h.message_id for h in hits} == {messages[0].id, messages[2].id, messages[3].id}
    assert all(h.kind == "message" and h.turn_id == messages[0].turn_id for h in hits)
    eat = search(db, user_id=user.id, session_id=session_id, query="squid shrimp")
    assert [(h.message_id, h.role, h.agent_id) for h in eat] == [
        (messages[2].id, "assistant", messages[2].agent_id)
    ]
    # Private messages are never found.
    assert search(db, user_id=user.id, session_id=session_id, query="secret tool") == []
    # Only messages before the given one.
    before = search(
        db,
        user_id=user.id,
        session_id=session_id,
        query="narwhal",
        before_message_id=messages[2].id,
    )
    assert [h.message_id for h in before] == [messages[0].id]
    # Another user's session, or none: no messages.
    assert search(db, user_id=make_user().id, session_id=session_id, query="narwhal") == []
    assert search(db, user_id=user.id, session_id=None, query="narwhal") == []


def test_files_and_messages_compete_on_one_score(client, db, user, conversation):
    session_id, messages = conversation
    uploaded(
        client,
        user,
        "ocean.md",
        b"Narwhals live in Arctic waters. Narwhals eat fish; narwhals dive deep. "
        + long_text(3).encode(),
    )
    uploaded(client, user, "misc.txt", long_text(3).encode() + b"A narwhal, once.")
    hits = search(db, user_id=user.id, session_id=session_id, query="narwhals eat", limit=20)
    kinds = {h.kind for h in hits}
    assert kinds == {"file", "message"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Whichever source holds the clearly better match ranks first.
    uploaded(client, user, "squid.txt", long_text(2).encode() + b"A squid.")
    squid = search(db, user_id=user.id, session_id=session_id, query="squid shrimp fish")
    assert (squid[0].kind, squid[0].message_id) == ("message", messages[2].id)
    assert "squid.txt" in [h.filename for h in squid[1:]]
    arctic = search(db, user_id=user.id, session_id=session_id, query="arctic waters narwhals")
    assert (arctic[0].kind, arctic[0].filename) == ("file", "ocean.md")
    assert {h.kind for h in arctic[1:]} >= {"message"}


def test_limit_is_clamped(client, db, user):
    for n in range(MAX_RESULTS + 3):
        uploaded(client, user, f"n{n}.txt", f"quokka number {n}".encode())
    assert len(search(db, user_id=user.id, session_id=None, query="quokka", limit=0)) == 1
    assert len(search(db, user_id=user.id, session_id=None, query="quokka", limit=500)) == (
        MAX_RESULTS
    )
    assert len(search(db, user_id=user.id, session_id=None, query="quokka")) == 5


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "*",
        "quokka*",
        "AND OR",
        "NOT",
        "NEAR(a b)",
        "text: quokka",
        "user_id: 1",
        "'); drop table file_chunks; --",
        "a\x00b",
        "\x00",
        "(((",
        "-quokka",
        "^quokka",
        "quokka & | ! :*",
        "x" * 5000,
        " ".join(f"w{n}" for n in range(200)),
    ],
)
def test_hostile_queries_return_lists(client, db, user, conversation, query):
    session_id, _ = conversation
    uploaded(client, user, "q.txt", b"quokka facts drop table")
    hits = search(db, user_id=user.id, session_id=session_id, query=query)
    assert isinstance(hits, list)
    assert all(isinstance(h, SearchHit) for h in hits)
    # The tables are all still there.
    assert search(db, user_id=user.id, session_id=None, query="quokka")


@pytest.mark.parametrize("query", ["", "   ", "?!.,;", '"" ** ()', "___", None])
def test_queries_without_words_find_nothing(db, user, query):
    assert search(db, user_id=user.id, session_id=None, query=query) == []


def test_a_query_does_not_match_the_owner_column(client, db, user):
    # On SQLite the owner id is an indexed column of the search index: it must not match words.
    uploaded(client, user, "ids.txt", b"plain words only")
    assert search(db, user_id=user.id, session_id=None, query=str(user.id)) == []
