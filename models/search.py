"""Full-text search over a user's files and a session's shared messages (the search tool).

One interface, two back ends:

- SQLite: FTS5 tables with external content (``file_chunks_fts`` over ``file_chunks``,
  ``messages_fts`` over the shared rows of ``messages``), kept in step by triggers, ranked by
  bm25(), excerpts by snippet(). Each index has a second column holding the owner (user id,
  session id) that the query requires, so FTS5 only scores the caller's rows.
- PostgreSQL: GIN indexes on ``to_tsvector('english', ...)`` of ``file_chunks.text`` and of the
  shared ``messages.content``, ranked by ts_rank_cd(), excerpts by ts_headline().

The query is user text: it is cut into words (letters and digits), each matched as a plain term,
any of them (OR); operators and quotes are never passed through. A query without words finds
nothing.

Scores: each engine picks its best ``limit`` candidates per source (bm25 on SQLite, ts_rank_cd
on PostgreSQL), and also marks the words that matched in the whole text. Every candidate, file
chunk or message, is then scored by one formula on those marks: BM25's term-frequency saturation
and length normalisation without corpus statistics,

    score = sum over the matched query terms t of  tf(t) * (K1 + 1) / (tf(t) + norm)
            / (number of query terms * (K1 + 1)),  norm = K1 * (1 - B + B * words / AVG_WORDS)

in [0, 1): a text holding more of the query's words, more often, in fewer words, scores higher.
Engines' own ranks are not comparable across sources (bm25 weighs a word by its rarity in one
index, and the messages and the file chunks are different indexes), so they only choose the
candidates. The merged candidates are returned best first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from .base import MAX_ID

MAX_RESULTS = 20
MAX_TERMS = 16
MAX_TERM_CHARS = 64
SNIPPET_CHARS = 300
# The shared score (see the module docstring): BM25's usual constants; a chunk is ~200 words.
K1 = 1.2
B = 0.75
AVG_WORDS = 200.0
# Around each matched word in the fully marked text (characters the texts are unlikely to hold).
MARK_START, MARK_END = "\u27e6", "\u27e7"
# Objects of the full-text indexes, which the models do not describe (see is_full_text_object).
FULL_TEXT_PREFIXES = ("file_chunks_fts", "messages_fts")
PG_TEXT_CONFIG = "english"

# Letters and digits: both engines split words at everything else (the underscore included).
_WORD = re.compile(r"[^\W_]+")
_MARKED = re.compile(f"{MARK_START}(.*?){MARK_END}", re.DOTALL)


@dataclass(frozen=True)
class SearchHit:
    kind: str  # "file" or "message"
    score: float  # higher is better, comparable within one result list
    snippet: str  # a short excerpt (<= ~300 chars) around the match
    file_id: int | None = None
    filename: str | None = None
    chunk: int | None = None  # ordinal
    char_start: int | None = None  # where the chunk starts in the file's text
    page: int | None = None
    message_id: int | None = None
    turn_id: int | None = None
    role: str | None = None
    agent_id: int | None = None


def is_full_text_object(name: str | None) -> bool:
    """Whether a table or index belongs to the full-text search (made by its migration)."""
    return bool(name) and name.removeprefix("ix_").startswith(FULL_TEXT_PREFIXES)


def query_terms(query: object) -> list[str]:
    """The distinct words of ``query`` (lowercased, at most MAX_TERMS)."""
    if not isinstance(query, str):
        return []
    terms: list[str] = []
    for word in _WORD.findall(query):
        word = word.lower()[:MAX_TERM_CHARS]
        if word not in terms:
            terms.append(word)
            if len(terms) == MAX_TERMS:
                break
    return terms


def search(
    db: Session,
    *,
    user_id: int,
    session_id: int | None,
    query: str,
    limit: int = 5,
    before_message_id: int | None = None,
) -> list[SearchHit]:
    """The best hits for ``query`` among ``user_id``'s files and ``session_id``'s shared
    messages (those with an id below ``before_message_id`` when given), best first.

    ``limit`` is clamped to 1 to MAX_RESULTS. A query without words gives []. Messages are only
    searched when the session is the user's and not deleted.
    """
    terms = query_terms(query)
    if not terms:
        return []
    limit = max(1, min(int(limit), MAX_RESULTS))
    postgres = db.get_bind().dialect.name == "postgresql"
    hits = (_pg_files if postgres else _sqlite_files)(db, user_id, terms, limit)
    if session_id is not None and 1 <= session_id <= MAX_ID:
        before = MAX_ID if before_message_id is None else before_message_id
        messages = _pg_messages if postgres else _sqlite_messages
        hits += messages(db, user_id, session_id, terms, limit, before)
    hits.sort(
        key=lambda hit: (
            -hit.score,
            hit.kind,
            hit.file_id or 0,
            hit.chunk or 0,
            -(hit.message_id or 0),
        )
    )
    return hits[:limit]


def shared_score(marked: str | None, terms: list[str]) -> float:
    """The one score of every hit, from its text with the matched words marked (see above).

    A marked word counts for the query term it shares the longest prefix with (the engines
    match stems: "narwhal" and "narwhals" are one term), or as a term of its own.
    """
    marked = marked or ""
    counts: dict[str, int] = {}
    for word in _MARKED.findall(marked):
        word = word.lower()
        best, best_len = word, 0
        for term in terms:
            common = len(_common_prefix(word, term))
            if common > best_len and common >= min(4, len(term), len(word)):
                best, best_len = term, common
        counts[best] = counts.get(best, 0) + 1
    if not counts:
        return 0.0
    words = max(len(_WORD.findall(marked)), 1)
    norm = K1 * (1 - B + B * words / AVG_WORDS)
    per_term = sorted((tf * (K1 + 1) / (tf + norm) for tf in counts.values()), reverse=True)
    return sum(per_term[: len(terms)]) / (len(terms) * (K1 + 1))


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def _short(snippet: str | None) -> str:
    snippet = " ".join((snippet or "").split())
    if len(snippet) <= SNIPPET_CHARS:
        return snippet
    cut = snippet.rfind(" ", 0, SNIPPET_CHARS - 1)
    return snippet[: cut if cut > SNIPPET_CHARS // 2 else SNIPPET_CHARS - 1] + "…"


# --- SQLite (FTS5) ---------------------------------------------------------------------------


def _fts5_match(scope_column: str, scope: int, text_column: str, terms: list[str]) -> str:
    # Every term is a quoted string (no operator or column name can get through; a quote would
    # be doubled, though words never hold one); the owner column is required, the words OR'ed.
    words = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    return f'{scope_column} : "{int(scope)}" AND {text_column} : ({words})'


# The FTS5 `rank` column, ordered inside FTS5, so the excerpt and the marked text are made for
# the returned rows only; the owner column weighs nothing.
_SQLITE_FILES = text(
    f"""
    SELECT c.file_id, f.filename, c.ordinal, c.char_start, c.page, hit.snippet, hit.marked
    FROM (
        SELECT rowid AS id,
               snippet(file_chunks_fts, 0, '«', '»', '…', 40) AS snippet,
               highlight(file_chunks_fts, 0, '{MARK_START}', '{MARK_END}') AS marked
        FROM file_chunks_fts
        WHERE file_chunks_fts MATCH :match AND rank MATCH 'bm25(1.0, 0.0)'
        ORDER BY rank
        LIMIT :limit
    ) AS hit
    JOIN file_chunks AS c ON c.id = hit.id
    JOIN uploaded_files AS f ON f.id = c.file_id
    WHERE c.user_id = :user_id AND f.deleted_at IS NULL
    """
)

_SQLITE_MESSAGES = text(
    f"""
    SELECT m.id, m.turn_id, m.role, m.agent_id, hit.snippet, hit.marked
    FROM (
        SELECT rowid AS id,
               snippet(messages_fts, 0, '«', '»', '…', 40) AS snippet,
               highlight(messages_fts, 0, '{MARK_START}', '{MARK_END}') AS marked
        FROM messages_fts
        WHERE messages_fts MATCH :match AND rank MATCH 'bm25(1.0, 0.0)'
          AND rowid < :before
        ORDER BY rank
        LIMIT :limit
    ) AS hit
    JOIN messages AS m ON m.id = hit.id
    JOIN sessions AS s ON s.id = m.session_id
    WHERE m.session_id = :session_id AND m.visibility = 'shared'
      AND s.user_id = :user_id AND s.deleted_at IS NULL
    """
)


def _sqlite_files(db: Session, user_id: int, terms: list[str], limit: int) -> list[SearchHit]:
    rows = db.execute(
        _SQLITE_FILES,
        {
            "match": _fts5_match("user_id", user_id, "text", terms),
            "user_id": user_id,
            "limit": limit,
        },
    )
    return [_file_hit(row, terms) for row in rows]


def _sqlite_messages(
    db: Session, user_id: int, session_id: int, terms: list[str], limit: int, before: int
) -> list[SearchHit]:
    rows = db.execute(
        _SQLITE_MESSAGES,
        {
            "match": _fts5_match("session_id", session_id, "content", terms),
            "session_id": session_id,
            "user_id": user_id,
            "before": before,
            "limit": limit,
        },
    )
    return [_message_hit(row, terms) for row in rows]


# --- PostgreSQL (tsvector, GIN) ---------------------------------------------------------------

# The expressions must read exactly as in the indexes (a literal configuration, not a
# parameter) for the planner to use them. websearch_to_tsquery never fails on its input.
_PG_HEADLINE = "'StartSel=«, StopSel=», MaxWords=35, MinWords=15, MaxFragments=2'"
_PG_MARK_ALL = f"'HighlightAll=true, StartSel={MARK_START}, StopSel={MARK_END}'"

_PG_FILES = text(
    f"""
    SELECT hit.file_id, hit.filename, hit.ordinal, hit.char_start, hit.page,
           ts_headline('{PG_TEXT_CONFIG}', hit.text, hit.query, {_PG_HEADLINE}) AS snippet,
           ts_headline('{PG_TEXT_CONFIG}', hit.text, hit.query, {_PG_MARK_ALL}) AS marked
    FROM (
        SELECT c.id, c.file_id, f.filename, c.ordinal, c.char_start, c.page, c.text, q.query,
               ts_rank_cd(to_tsvector('{PG_TEXT_CONFIG}', c.text), q.query) AS rank
        FROM websearch_to_tsquery('{PG_TEXT_CONFIG}', :query) AS q(query)
        JOIN file_chunks AS c ON to_tsvector('{PG_TEXT_CONFIG}', c.text) @@ q.query
        JOIN uploaded_files AS f ON f.id = c.file_id
        WHERE c.user_id = :user_id AND f.deleted_at IS NULL
        ORDER BY rank DESC, c.id
        LIMIT :limit
    ) AS hit
    ORDER BY hit.rank DESC, hit.id
    """
)

_PG_MESSAGES = text(
    f"""
    SELECT hit.id, hit.turn_id, hit.role, hit.agent_id,
           ts_headline('{PG_TEXT_CONFIG}', hit.content, hit.query, {_PG_HEADLINE}) AS snippet,
           ts_headline('{PG_TEXT_CONFIG}', hit.content, hit.query, {_PG_MARK_ALL}) AS marked
    FROM (
        SELECT m.id, m.turn_id, m.role, m.agent_id, m.content, q.query,
               ts_rank_cd(to_tsvector('{PG_TEXT_CONFIG}', m.content), q.query) AS rank
        FROM websearch_to_tsquery('{PG_TEXT_CONFIG}', :query) AS q(query)
        JOIN messages AS m ON to_tsvector('{PG_TEXT_CONFIG}', m.content) @@ q.query
        JOIN sessions AS s ON s.id = m.session_id
        WHERE m.session_id = :session_id AND m.visibility = 'shared' AND m.id < :before
          AND s.user_id = :user_id AND s.deleted_at IS NULL
        ORDER BY rank DESC, m.id DESC
        LIMIT :limit
    ) AS hit
    ORDER BY hit.rank DESC, hit.id DESC
    """
)


def _pg_query(terms: list[str]) -> str:
    # Words only (no quotes or minus signs), so websearch_to_tsquery reads "a or b or c".
    return " or ".join(terms)


def _pg_files(db: Session, user_id: int, terms: list[str], limit: int) -> list[SearchHit]:
    rows = db.execute(_PG_FILES, {"query": _pg_query(terms), "user_id": user_id, "limit": limit})
    return [_file_hit(row, terms) for row in rows]


def _pg_messages(
    db: Session, user_id: int, session_id: int, terms: list[str], limit: int, before: int
) -> list[SearchHit]:
    rows = db.execute(
        _PG_MESSAGES,
        {
            "query": _pg_query(terms),
            "session_id": session_id,
            "user_id": user_id,
            "before": before,
            "limit": limit,
        },
    )
    return [_message_hit(row, terms) for row in rows]


def _file_hit(row, terms: list[str]) -> SearchHit:
    return SearchHit(
        kind="file",
        score=shared_score(row.marked, terms),
        snippet=_short(row.snippet),
        file_id=row.file_id,
        filename=row.filename,
        chunk=row.ordinal,
        char_start=row.char_start,
        page=row.page,
    )


def _message_hit(row, terms: list[str]) -> SearchHit:
    return SearchHit(
        kind="message",
        score=shared_score(row.marked, terms),
        snippet=_short(row.snippet),
        message_id=row.id,
        turn_id=row.turn_id,
        role=row.role,
        agent_id=row.agent_id,
    )
