"""History: page latency of ``GET /api/v1/sessions/{id}/messages`` as sessions grow.

    DATABASE_URL=... python -m bench.history --sizes 10 10000 1000000 --email bench@example.com

Sessions of each size are seeded straight into the database in bulk (INSERT ... SELECT over a
generated series, in one transaction, one user message and one reply per turn) and reused by
later runs. Each page kind is read sequentially by one client: the first page (oldest first),
a page in the middle, the last page, and the newest page (order=desc); the pages of every size
take turns in rounds.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from api.pagination import encode_cursor
from models.base import UTCDateTime, utcnow
from models.db import make_engine

from .client import Client, add_target_args, fmt_latency, latency_summary

# The server signs its cursors with its secret key: bench/run.py starts its servers with this
# one; against another server, set ROOMCAST_SECRET_KEY to that server's.
BENCH_SECRET_KEY = "benchmark-secret-key-not-for-production"

PAGE_LIMIT = 20
REPLY = "This is an instant reply from Roomcast's benchmark provider."


def _title(size: int) -> str:
    return f"bench-history-{size}"


def _series(dialect: str, count_param: str) -> tuple[str, str]:
    """A CTE prefix and FROM clause yielding rows n = 1..:count on either back end."""
    if dialect == "postgresql":
        return "", f"generate_series(1, :{count_param}) AS s(n)"
    return (
        "WITH RECURSIVE s(n) AS"
        f" (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :{count_param}) ",
        "s",
    )


def seed(engine: Engine, user_id: int, agent_id: int, size: int) -> tuple[int, float]:
    """A session of ``size`` messages (reused when one exists); returns (id, seconds spent)."""
    title = _title(size)
    with engine.begin() as conn:
        existing = (
            conn.execute(
                text("SELECT id FROM sessions WHERE user_id = :u AND title = :t ORDER BY id"),
                {"u": user_id, "t": title},
            )
            .scalars()
            .all()
        )
        for session_id in existing:
            count = conn.scalar(
                text("SELECT count(*) FROM messages WHERE session_id = :s"), {"s": session_id}
            )
            if count == size:
                return session_id, 0.0
    started = time.perf_counter()
    now = bindparam("now", utcnow(), type_=UTCDateTime())
    dialect = engine.dialect.name
    with_prefix, series = _series(dialect, "turns")
    with engine.begin() as conn:
        for session_id in existing:  # an incomplete earlier seed
            conn.execute(text("DELETE FROM sessions WHERE id = :s"), {"s": session_id})
        session_id = conn.execute(
            text(
                "INSERT INTO sessions (user_id, agent_id, title, multitask, metadata, created_at,"
                " updated_at) VALUES (:u, :a, :t, 'reject', '{}', :now, :now) RETURNING id"
            ).bindparams(now),
            {"u": user_id, "a": agent_id, "t": title},
        ).scalar_one()
        conn.execute(
            text(
                f"{with_prefix}INSERT INTO turns (session_id, user_id, status, stop_reason,"
                " attempt, progress, metadata, prompt_tokens, completion_tokens, cost, created_at,"
                " updated_at, started_at, completed_at)"
                f" SELECT :s, :u, 'completed', 'completed', 1, '{{}}', '{{}}', 40, 12, 0, :now,"
                f" :now, :now, :now FROM {series}"
            ).bindparams(now),
            {"s": session_id, "u": user_id, "turns": size // 2},
        )
        conn.execute(
            text(
                "INSERT INTO messages (session_id, turn_id, step, role, agent_id, visibility,"
                " content, metadata, created_at)"
                " SELECT :s, t.id, k.step,"
                " CASE k.step WHEN 0 THEN 'user' ELSE 'assistant' END,"
                " CASE k.step WHEN 0 THEN NULL ELSE :a END, 'shared',"
                " CASE k.step WHEN 0 THEN 'Benchmark turn number ' || t.id ELSE :reply END,"
                " '{}', :now"
                " FROM turns t CROSS JOIN (SELECT 0 AS step UNION ALL SELECT 1) k"
                " WHERE t.session_id = :s ORDER BY t.id, k.step"
            ).bindparams(now),
            {"s": session_id, "a": agent_id, "reply": REPLY},
        )
    with engine.connect() as conn:
        # Fresh planner statistics after a bulk load (PostgreSQL and SQLite both have ANALYZE).
        conn.execute(text("ANALYZE"))
        conn.commit()
    return session_id, time.perf_counter() - started


def page_paths(engine: Engine, session_id: int, size: int) -> dict[str, str]:
    """The page kinds to read: first, middle, last (oldest first) and newest (desc)."""
    base = f"/api/v1/sessions/{session_id}/messages?limit={PAGE_LIMIT}"
    with engine.connect() as conn:

        def id_at(offset: int) -> int:
            return conn.scalar(
                text("SELECT id FROM messages WHERE session_id = :s ORDER BY id LIMIT 1 OFFSET :o"),
                {"s": session_id, "o": max(0, offset)},
            )

        middle = id_at(size // 2)
        last = id_at(size - PAGE_LIMIT - 1)
    secret = os.environ.get("ROOMCAST_SECRET_KEY", BENCH_SECRET_KEY)
    return {
        "first": base,
        "middle": f"{base}&cursor={encode_cursor([middle], secret=secret)}",
        "last": f"{base}&cursor={encode_cursor([last], secret=secret)}",
        "newest": f"{base}&order=desc",
    }


def measure_pages(
    base_url: str,
    token: str,
    paths: dict[Any, str],
    *,
    requests: int = 200,
    warmup: int = 20,
    rounds: int = 4,
) -> dict[Any, dict[str, Any]]:
    """Latency of each page in ``paths`` (any keys), read sequentially by one client.

    The pages take turns, ``rounds`` times for ``requests / rounds`` requests each, and each
    page's figures are over all its requests: a drift in the machine's speed during the run
    then weighs on every page alike, rather than on whichever was measured last.
    """
    client = Client(base_url, token)
    samples: dict[Any, list[float]] = {key: [] for key in paths}
    for path in paths.values():
        for _ in range(warmup):
            client.expect(client.get(path), 200)
    for round_ in range(rounds):
        share = requests // rounds + (1 if round_ < requests % rounds else 0)
        for key, path in paths.items():
            for _ in range(share):
                started = time.perf_counter()
                response = client.expect(client.get(path), 200)
                samples[key].append(time.perf_counter() - started)
            if not response.json()["data"]:
                raise RuntimeError(f"{path} returned an empty page")
    client.close()
    return {key: latency_summary(values) for key, values in samples.items()}


def all_page_paths(
    engine: Engine, user_id: int, agent_id: int, sizes: list[int], report
) -> dict[tuple[int, str], str]:
    """Every page kind of a session of each size (seeded when missing), keyed (size, kind)."""
    paths = {}
    for size in sizes:
        session_id, seeded = seed(engine, user_id, agent_id, size)
        if seeded:
            report(f"  (seeded {size:,} messages in {seeded:.1f} s)")
        for kind, path in page_paths(engine, session_id, size).items():
            paths[size, kind] = path
    return paths


def user_and_agent(engine: Engine, email: str) -> tuple[int, int]:
    """The bench user's id and one agent of theirs (the history sessions belong to it)."""
    with engine.connect() as conn:
        user_id = conn.scalar(text("SELECT id FROM users WHERE email = :e"), {"e": email})
        if user_id is None:
            raise SystemExit(f"no user {email}: create it with 'flask --app api users create'")
        agent_id = conn.scalar(
            text("SELECT min(id) FROM agents WHERE user_id = :u AND deleted_at IS NULL"),
            {"u": user_id},
        )
    if agent_id is None:
        raise SystemExit(f"{email} has no agent yet: run a turn benchmark first, or create one")
    return user_id, agent_id


def main(argv: list[str] | None = None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--email", default="bench@example.com", help="the token's user")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 10_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=200, help="per page kind")
    args = parser.parse_args(argv)
    if not args.token or not args.database_url:
        parser.error("--token and --database-url (or BENCH_TOKEN and DATABASE_URL) are required")
    engine = make_engine(args.database_url, pool_size=1)
    user_id, agent_id = user_and_agent(engine, args.email)
    print(f"history pages of {PAGE_LIMIT} ({args.requests} sequential requests each):")
    paths = all_page_paths(engine, user_id, agent_id, args.sizes, print)
    for (size, kind), summary in measure_pages(
        args.base_url, args.token, paths, requests=args.requests
    ).items():
        print(f"  {size:>9,} msgs  {kind:<6} {fmt_latency(summary)}")
    engine.dispose()


if __name__ == "__main__":
    main()
