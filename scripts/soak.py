"""A bounded soak of the production shape, with a Celery worker restarted in the middle.

    python -m scripts.soak                    # 3 minutes (what `make soak` runs)
    python -m scripts.soak --duration 120 --clients 8 --restart-signal TERM

It starts gunicorn, two ``celery -A worker worker`` processes and beat against PostgreSQL and
Redis on 127.0.0.1 (the ``soak`` database, dropped and migrated at start, and Redis db 7,
flushed; --database-url / --broker-url or SOAK_DATABASE_URL / SOAK_BROKER_URL change them),
creates a user, agents on the ``instant`` provider, and one session per client (standalone and
two-agent sequential room sessions, alternately; multitask ``enqueue``). Each client posts
bursts of 1-3 turns and long-polls each until it is terminal. Halfway through, the first worker
is killed (SIGKILL by default) and started again. After the posting ends it waits (bounded) for
every accepted turn to end, then checks in the database, exactly:

- accepted turns (every 202) = the turns in the database = the completed turns;
- each turn has 1 user message and one reply per planned speaker, and no (turn, step) twice;
- one usage row per LLM call: each reply has its (turn, step) usage row and there is no other,
  and each turn's token totals are the sum of its usage rows.

It prints turns/s, POST-to-terminal latency, the take-over time (from the kill to the last turn
the dead worker held being completed) and the counts, and exits non-zero on any mismatch.
Process logs are in var/bench/soak-*.log. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import procs
from bench.client import TERMINAL, Client, fmt_latency, latency_summary
from bench.run import ensure_postgres_database, service_env
from models.db import make_engine

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/soak"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/7"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SOAK_EMAIL = "soak@example.com"
ROOM_AGENTS = 2
# A long-poll's own bound; a turn is polled again until the drain deadline.
LONG_POLL = "?wait=10&until=terminal"


@dataclass
class Accepted:
    turn_id: int
    session_id: int
    posted_at: float  # time.monotonic()
    ended_at: float | None = None
    status: str | None = None


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # any POST answered other than 202
    poll_errors: list[str] = field(default_factory=list)


def _check_loopback(url: str, what: str) -> None:
    host = make_url(url).host if "://" in url else None
    if host not in LOOPBACK:
        sys.exit(f"soak: the {what} must be on 127.0.0.1, not {host!r} ({url})")


def _prepare(env: dict[str, str]) -> str:
    """A fresh, migrated soak database, an empty Redis db, and a token for a new user."""
    url = env["DATABASE_URL"]
    ensure_postgres_database(url)
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    for argv in (
        [str(procs.BIN / "alembic"), "upgrade", "head"],
        [str(procs.BIN / "flask"), "--app", "api", "users", "create", SOAK_EMAIL],
    ):
        done = subprocess.run(argv, cwd=procs.ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"soak: {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def _worker(number: int, env: dict[str, str], concurrency: int) -> procs.Proc:
    return procs.celery_worker(
        f"soak-worker-{number}",
        "worker",
        env,
        queues="turns,maintenance",
        concurrency=concurrency,
    )


def _healthy(api_url: str) -> bool:
    client = Client(api_url)
    try:
        return client.get("/api/v1/health/ready").status == 200
    finally:
        client.close()


def _sessions(api_url: str, token: str, clients: int) -> list[tuple[int, int]]:
    """One session per client, standalone and room alternately: (session id, planned replies)."""
    setup = Client(api_url, token)

    def agent() -> int:
        body = {"name": f"soak-{secrets.token_hex(4)}", "provider": "instant", "model": "instant"}
        return setup.expect(setup.post("/api/v1/agents", body), 201).json()["id"]

    sessions = []
    for n in range(clients):
        if n % 2 == 0:
            path, speakers = f"/api/v1/agents/{agent()}/sessions", 1
        else:
            room = setup.post(
                "/api/v1/rooms",
                {"name": f"soak-room-{n}", "orchestration": {"mode": "sequential"}},
            )
            room_id = setup.expect(room, 201).json()["id"]
            for _ in range(ROOM_AGENTS):
                member = setup.post(f"/api/v1/rooms/{room_id}/agents", {"agent_id": agent()})
                setup.expect(member, 201)
            path, speakers = f"/api/v1/rooms/{room_id}/sessions", ROOM_AGENTS
        response = setup.post(path, {"title": f"soak {n}", "multitask": "enqueue"})
        sessions.append((setup.expect(response, 201).json()["id"], speakers))
    setup.close()
    return sessions


def _client_loop(
    api_url: str, token: str, session_id: int, seed: int, stop_posting: float, drain: float, tally
) -> None:
    """Post bursts of 1-3 turns (the later ones wait behind the first: enqueue), then
    long-poll each until it ends; until ``stop_posting``, polling at most until ``drain``."""
    rng = random.Random(seed)
    client = Client(api_url, token, timeout=30)
    n = 0
    while time.monotonic() < stop_posting:
        burst: list[Accepted] = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            n += 1
            posted_at = time.monotonic()
            try:
                response = client.post(
                    f"/api/v1/sessions/{session_id}/turns", {"content": f"soak message {n}"}
                )
            except OSError as error:
                with tally.lock:
                    tally.refused.append(f"session {session_id}: {error!r}")
                continue
            if response.status != 202:
                with tally.lock:
                    tally.refused.append(f"{response.status} {response.body[:200]!r}")
                continue
            turn = Accepted(response.json()["id"], session_id, posted_at)
            burst.append(turn)
            with tally.lock:
                tally.accepted.append(turn)
        for turn in burst:
            while turn.ended_at is None and time.monotonic() < drain:
                try:
                    response = client.get(f"/api/v1/turns/{turn.turn_id}{LONG_POLL}")
                except OSError as error:
                    with tally.lock:
                        tally.poll_errors.append(f"turn {turn.turn_id}: {error!r}")
                    time.sleep(0.5)
                    continue
                if response.status != 200:
                    with tally.lock:
                        tally.poll_errors.append(f"turn {turn.turn_id}: {response.status}")
                    time.sleep(0.5)
                    continue
                status = response.json()["status"]
                if status in TERMINAL:
                    turn.ended_at, turn.status = time.monotonic(), status
    client.close()


def _running_turns(engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(text("SELECT id FROM turns WHERE status = 'running'")))


# Per turn: status, attempt, completion time, user messages, replies, usage rows, and whether
# its token totals equal the sum of its usage rows.
_PER_TURN = text(
    """
    SELECT t.id, t.session_id, t.status, t.attempt, t.completed_at,
           (SELECT count(*) FROM messages m WHERE m.turn_id = t.id AND m.role = 'user'),
           (SELECT count(*) FROM messages m WHERE m.turn_id = t.id AND m.role = 'assistant'),
           (SELECT count(*) FROM usage_records u WHERE u.turn_id = t.id),
           t.prompt_tokens = (SELECT coalesce(sum(u.prompt_tokens), 0) FROM usage_records u
                              WHERE u.turn_id = t.id)
           AND t.completion_tokens = (SELECT coalesce(sum(u.completion_tokens), 0)
                                      FROM usage_records u WHERE u.turn_id = t.id)
    FROM turns t ORDER BY t.id
    """
)
_DUPLICATE_STEPS = text(
    "SELECT count(*) FROM (SELECT turn_id, step FROM messages GROUP BY turn_id, step"
    " HAVING count(*) > 1) d"
)
# Usage rows without the reply of their (turn, step), and replies without their usage row.
_UNMATCHED_USAGE = text(
    "SELECT count(*) FROM usage_records u WHERE NOT EXISTS (SELECT 1 FROM messages m"
    " WHERE m.turn_id = u.turn_id AND m.step = u.step AND m.role = 'assistant')"
)
_UNMATCHED_REPLIES = text(
    "SELECT count(*) FROM messages m WHERE m.role = 'assistant' AND NOT EXISTS (SELECT 1"
    " FROM usage_records u WHERE u.turn_id = m.turn_id AND u.step = m.step)"
)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ready(worker: procs.Proc) -> bool:
    """Whether the Celery worker consumes (its log says so)."""
    return " ready." in worker.log_path.read_text()


def _verify(engine, tally: Tally, speakers: dict[int, int], kill_wall: float, held: set[int]):
    """The exact checks; returns (figures, mismatches)."""
    with engine.connect() as conn:
        rows = conn.execute(_PER_TURN).all()
        duplicate_steps = conn.scalar(_DUPLICATE_STEPS)
        unmatched_usage = conn.scalar(_UNMATCHED_USAGE)
        unmatched_replies = conn.scalar(_UNMATCHED_REPLIES)
        usage_rows = conn.scalar(text("SELECT count(*) FROM usage_records"))
        replies = conn.scalar(text("SELECT count(*) FROM messages WHERE role = 'assistant'"))
    accepted = {turn.turn_id for turn in tally.accepted}
    in_db = {row.id for row in rows}
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    completed = statuses.get("completed", 0)
    problems = []
    if accepted != in_db:
        problems.append(
            f"accepted turns {len(accepted)} != turns in the database {len(in_db)}"
            f" (missing {sorted(accepted - in_db)[:10]}, extra {sorted(in_db - accepted)[:10]})"
        )
    if completed != len(accepted):
        problems.append(
            f"accepted turns {len(accepted)} != completed turns {completed}: {statuses}"
        )
    wrong_counts = [
        (row.id, row[5], row[6], speakers[row.session_id])
        for row in rows
        if row[5] != 1 or row[6] != speakers[row.session_id]
    ]
    if wrong_counts:
        problems.append(
            f"{len(wrong_counts)} turns without 1 user message and one reply per speaker"
            f" (turn, user, replies, planned): {wrong_counts[:10]}"
        )
    if duplicate_steps:
        problems.append(f"{duplicate_steps} (turn, step) pairs written twice")
    if usage_rows != replies or unmatched_usage or unmatched_replies:
        problems.append(
            f"usage rows {usage_rows} != LLM calls (replies) {replies}"
            f" ({unmatched_usage} usage rows without a reply, {unmatched_replies} replies"
            " without a usage row)"
        )
    bad_totals = [row.id for row in rows if not row[8]]
    if bad_totals:
        problems.append(f"token totals != sum of usage rows on turns {bad_totals[:10]}")
    # Take-over: the turns claimed more than once (the dead worker's).
    taken_over = [row for row in rows if row.attempt > 1]
    takeover_s = None
    if taken_over and all(row.completed_at for row in taken_over):
        last = max(_utc(row.completed_at) for row in taken_over)
        takeover_s = last.timestamp() - kill_wall
    figures = {
        "statuses": statuses,
        "replies": replies,
        "usage_rows": usage_rows,
        "messages": sum(row[5] + row[6] for row in rows),
        "running_at_kill": len(held),
        "taken_over": len(taken_over),
        "takeover_s": takeover_s,
    }
    return figures, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of posting")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--database-url", default=os.environ.get("SOAK_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument(
        "--broker-url", default=os.environ.get("SOAK_BROKER_URL", DEFAULT_BROKER_URL)
    )
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--worker-concurrency", type=int, default=500)
    parser.add_argument("--restart-signal", choices=("KILL", "TERM"), default="KILL")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds after the posting ends for every accepted turn to end",
    )
    args = parser.parse_args(argv)
    _check_loopback(args.database_url, "database")
    _check_loopback(args.broker_url, "broker")
    if make_url(args.database_url).get_backend_name() != "postgresql":
        sys.exit("soak: the production shape needs a PostgreSQL database URL")

    procs.install_cleanup()
    env = service_env(args.database_url, args.broker_url)
    token = _prepare(env)
    api_url = f"http://127.0.0.1:{args.port}"
    api = procs.gunicorn(
        "soak-api", "api:create_app()", args.port, env, workers=2, connections=2000
    )
    workers = [_worker(n, env, args.worker_concurrency) for n in (1, 2)]
    beat = procs.celery_beat("soak-beat", "worker", env)
    engine = make_engine(args.database_url, pool_size=2)
    try:
        procs.wait_until(lambda: _healthy(api_url), "API", [api, *workers, beat])
        for worker in workers:
            procs.wait_until(lambda w=worker: _ready(w), worker.name, [worker])
        sessions = _sessions(api_url, token, args.clients)
        speakers = dict(sessions)
        tally = Tally()
        started = time.monotonic()
        stop_posting = started + args.duration
        drain = stop_posting + args.drain_timeout
        threads = [
            threading.Thread(
                target=_client_loop,
                args=(api_url, token, sid, n, stop_posting, drain, tally),
                daemon=True,
            )
            for n, (sid, _) in enumerate(sessions)
        ]
        for thread in threads:
            thread.start()
        print(
            f"soak: {args.clients} clients ({len(sessions) - len(sessions) // 2} standalone,"
            f" {len(sessions) // 2} room sessions of {ROOM_AGENTS} agents) for"
            f" {args.duration:g} s against {api_url}; 2 workers (gevent {args.worker_concurrency})"
        )
        time.sleep(args.duration / 2)
        held = _running_turns(engine)
        kill_wall = datetime.now(UTC).timestamp()
        killed_at = time.monotonic() - started
        victim = workers[0]
        os.killpg(victim.pid, getattr(signal, f"SIG{args.restart_signal}"))
        victim.popen.wait(60)
        victim.stop()
        workers[0] = _worker(1, env, args.worker_concurrency)
        procs.wait_until(lambda: _ready(workers[0]), "restarted worker", [workers[0]])
        print(
            f"soak: at {killed_at:.0f} s, SIG{args.restart_signal} to worker 1"
            f" ({len(held)} turns running at that moment), ready again in"
            f" {datetime.now(UTC).timestamp() - kill_wall:.2f} s"
        )
        for thread in threads:
            thread.join(max(0.0, drain - time.monotonic()) + 35)
        posting_s = args.duration
        figures, problems = _verify(engine, tally, speakers, kill_wall, held)
    finally:
        engine.dispose()
        for proc in (beat, *workers, api):
            proc.stop()

    latencies = [t.ended_at - t.posted_at for t in tally.accepted if t.ended_at is not None]
    unfinished = [t.turn_id for t in tally.accepted if t.ended_at is None]
    if tally.refused:
        problems.append(f"{len(tally.refused)} POSTs not accepted: {tally.refused[:5]}")
    if unfinished:
        problems.append(f"{len(unfinished)} turns not seen terminal by their client")
    print(f"   accepted turns      {len(tally.accepted)} ({len(tally.accepted) / posting_s:.1f}/s)")
    print(f"   turns by status     {figures['statuses']}")
    print(
        f"   messages            {figures['messages']} ({figures['replies']} replies),"
        f" usage rows {figures['usage_rows']}"
    )
    print(f"   POST -> terminal    {fmt_latency(latency_summary(latencies))}")
    takeover = figures["takeover_s"]
    print(
        f"   take-over           {figures['taken_over']} turns claimed again"
        f" ({figures['running_at_kill']} running just before the restart)"
        + (f"; the last completed {takeover:.1f} s after the kill" if takeover is not None else "")
    )
    print(f"   poll errors         {len(tally.poll_errors)} {tally.poll_errors[:3]}")
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("soak: OK" if not problems else f"soak: FAILED ({len(problems)} mismatches)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
