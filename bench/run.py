"""Run every benchmark against the production shape and the embedded mode, and print the report.

    python -m bench.run                      # both modes (what `make bench` runs)
    python -m bench.run --mode production    # PostgreSQL + Redis, gunicorn, separate workers
    python -m bench.run --mode embedded      # serve.py: SQLite + in-memory broker, one process

The harness starts and stops its own processes (logs in var/bench/), migrates the benchmark
database, creates a user and token with ``flask --app api users create`` and an agent on the
``instant`` provider through the API, then measures, in this order: the raw Celery baseline,
the plain PK-read yardstick, turn latency, turn throughput, polling and history; then, with
agents on a slow OpenAI-compatible server on loopback (bench/slow_llm.py, started with the
shape), many clients waiting on their turns by long-poll and by event stream, and a probe of
the API while a thousand clients wait (bench/slow_scenarios.py). Every figure is printed with
its conditions and as a ratio to the baseline measured in the same run (or to the ideal); the
targets are checked at the end. Figures also go to var/bench/results-MODE.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from celery import Celery
from sqlalchemy import text

from models.db import make_engine, normalize_url

from . import celery_baseline, history, polling, procs, slow_scenarios, turns
from .client import Client, fmt_latency, latency_summary, setup_client
from .load import fmt_rps, requests_per_second, tool
from .rlimits import raise_open_files_limit

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/9"
EMBEDDED_DATABASE = procs.ROOT / "var" / "bench" / "embedded.db"
BENCH_EMAIL = "bench@example.com"

# Targets, as ratios to figures measured in the same run.
LATENCY_TARGET = 3.0  # turn p50 <= 3 x raw Celery write round trip p50
THROUGHPUT_TARGET = 0.20  # turns/s with 8 clients >= 20% of raw Celery write tasks/s
POLLING_TARGET = 0.60  # turn GET req/s >= 60% of the PK-read yardstick's
HISTORY_P99_MS = 10.0  # every page's p99
HISTORY_FLATNESS = 1.5  # p50 at the largest size <= 1.5 x p50 at the smallest, per page kind
LONG_POLL = "long-poll ?wait=10&until=terminal"
# The latency figures run in rounds, the raw Celery round trip measured before each.
LATENCY_ROUNDS = 3


@dataclass
class Mode:
    name: str
    label: str
    env: dict[str, str]
    api_url: str
    pk_url: str
    conditions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def on_ports(cls, name: str, label: str, env: dict[str, str], port: int) -> Mode:
        """The API on ``port``, the PK-read yardstick on the next one."""
        return cls(
            name=name,
            label=label,
            env=env,
            api_url=f"http://127.0.0.1:{port}",
            pk_url=f"http://127.0.0.1:{port + 1}",
        )


def service_env(database_url: str, broker_url: str | None) -> dict[str, str]:
    """The environment of the API, workers and beat started against these back ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMCAST_", "CELERY_"))}
    env.update(
        DATABASE_URL=database_url,
        ROOMCAST_SECRET_KEY=history.BENCH_SECRET_KEY,
        ROOMCAST_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        # A few users make thousands of requests a second: the limiter still counts every one
        # (its cost is part of the figures) but never refuses.
        ROOMCAST_RATE_LIMIT="100000000/minute",
        # Every run adds sessions and agents for its clients (a thousand at once): no caps.
        ROOMCAST_MAX_SESSIONS_PER_USER="0",
        ROOMCAST_MAX_AGENTS_PER_USER="0",
    )
    env.pop("ROOMCAST_WORKER_DATABASE_URL", None)
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    return env


def fitting_pool_size(args) -> int:
    """ROOMCAST_DB_POOL_SIZE such that the API's and the workers' engines, each keeping up to
    twice that many connections, stay within the server's max_connections (README
    "Concurrency"), with a fifth of them left for beat, the bench's own and psql."""
    server = normalize_url(args.database_url).set(database="postgres")
    engine = make_engine(server.render_as_string(False), pool_size=1)
    try:
        with engine.connect() as conn:
            limit = int(conn.scalar(text("SHOW max_connections")))
    finally:
        engine.dispose()
    engines = args.gunicorn_workers + 2 * args.worker_processes
    return max(2, min(10, int(limit * 0.8) // (2 * engines)))


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, cwd=procs.ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database when it does not exist yet."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    server = make_engine(parsed.set(database="postgres").render_as_string(False), pool_size=1)
    try:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            )
            if not exists:
                quoted = server.dialect.identifier_preparer.quote(parsed.database)
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        server.dispose()


def prepare_database(env: dict[str, str], fresh: bool) -> None:
    url = env["DATABASE_URL"]
    ensure_postgres_database(url)
    if fresh:
        engine = make_engine(url, pool_size=1)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            EMBEDDED_DATABASE.unlink(missing_ok=True)
        engine.dispose()
    _run([str(procs.BIN / "alembic"), "upgrade", "head"], env)
    celery_baseline.ensure_table(url)


def issue_token(env: dict[str, str]) -> str:
    out = _run([str(procs.BIN / "flask"), "--app", "api", "users", "create", BENCH_EMAIL], env)
    return out.strip().splitlines()[-1]


def _ok(url: str) -> bool:
    parts = url.split("/", 3)
    client = Client(f"{parts[0]}//{parts[2]}")
    try:
        return client.get("/" + parts[3]).status == 200
    finally:
        client.close()


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
    }


def _server_versions(database_url: str, broker_url: str | None) -> dict[str, str]:
    engine = make_engine(database_url, pool_size=1)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            db = conn.scalar(text("SHOW server_version"))
            db = f"PostgreSQL {db}"
        else:
            db = f"SQLite {conn.scalar(text('SELECT sqlite_version()'))}"
    engine.dispose()
    versions = {"database": db}
    if broker_url:
        versions["broker"] = f"Redis {redis.Redis.from_url(broker_url).info()['redis_version']}"
    else:
        versions["broker"] = "kombu in-memory transport"
    return versions


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Context:
    """What every scenario gets: where to send requests, as whom, and the baseline figures."""

    mode: Mode
    token: str
    agent_id: int
    baseline: dict[str, Any]
    args: argparse.Namespace
    # The baseline's Celery client, to measure it again between rounds of a scenario (None in
    # embedded mode: its in-memory broker lives in the process that measured it).
    baseline_app: Celery | None = None

    @property
    def base_rt(self) -> float:
        return self.baseline["write_round_trip"]["p50_ms"]

    @property
    def base_tps(self) -> float:
        return self.baseline["write_tasks_per_s"]


def scenario_yardsticks(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    print(f"-- yardsticks ({tool(args.load)}, {args.duration:g} s each)")
    yard: dict[str, Any] = {}
    for conns in args.connections:
        yard[f"hello_{conns}"] = requests_per_second(
            f"{ctx.mode.pk_url}/hello", connections=conns, duration=args.duration, load=args.load
        )
        print(f"   hello-world JSON       {conns:>3} conns {fmt_rps(yard[f'hello_{conns}'])}")
    return yard


def _add_round_trips(ctx: Context, samples: list[float], count: int) -> None:
    samples.extend(celery_baseline.round_trips_of(ctx.baseline_app, count=count))


def scenario_latency(ctx: Context) -> dict[str, Any]:
    rounds = LATENCY_ROUNDS if ctx.baseline_app is not None else 1
    print(
        f"-- turn latency ({ctx.args.turns} sequential turns on one session, instant provider"
        + (
            f"; in {rounds} rounds, each after {ctx.args.round_trips // rounds} raw Celery write"
            " round trips, the baseline of its ratio)"
            if rounds > 1
            else ")"
        )
    )
    latency: dict[str, Any] = {}
    for poll, interval, label in (
        ("longpoll", 0.0, LONG_POLL),
        ("etag", 0.010, "ETag poll every 10 ms"),
        ("etag", 0.001, "ETag poll every 1 ms"),
    ):
        base: list[float] = []
        figures = turns.measure_latency(
            ctx.mode.api_url,
            ctx.token,
            ctx.agent_id,
            turns=ctx.args.turns,
            poll=poll,
            interval=interval,
            rounds=rounds,
            before_round=(
                partial(_add_round_trips, ctx, base, ctx.args.round_trips // rounds)
                if rounds > 1
                else None
            ),
        )
        base_rt = ctx.base_rt
        if base:
            figures["baseline_write_round_trip"] = latency_summary(base)
            base_rt = figures["baseline_write_round_trip"]["p50_ms"]
        latency[label] = figures
        print(
            f"   {label:<22} {fmt_latency(figures['latency'])}"
            f"  = {figures['latency']['p50_ms'] / base_rt:.1f}x baseline"
            + (f" ({base_rt:.2f} ms)" if base else "")
            + f"  ({figures['gets_per_turn']} GETs/turn, failed {figures['failed']})"
        )
    return latency


def scenario_throughput(ctx: Context) -> dict[str, Any]:
    duration = ctx.args.turn_duration
    print(f"-- turn throughput (each client its own session, long-poll, {duration:g} s)")
    throughput: dict[str, Any] = {}
    for clients in ctx.args.clients:
        figures = turns.measure_throughput(
            ctx.mode.api_url, ctx.token, ctx.agent_id, clients=clients, duration=duration
        )
        throughput[clients] = figures
        print(
            f"   {clients:>3} clients {figures['turns_per_s']:>7.1f} turns/s"
            f" = {figures['turns_per_s'] / ctx.base_tps:.0%} of baseline  "
            f"{fmt_latency(figures['latency'])}  failed {figures['failed']}"
        )
    return throughput


def scenario_polling(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    print(
        f"-- polling GET /api/v1/turns/{{id}} on a finished turn"
        f" ({tool(args.load)}, {args.duration:g} s per figure: the PK read, 200 and 304 take"
        " turns in 3 rounds, median round)"
    )
    turn_id, etag = polling.finished_turn(ctx.mode.api_url, ctx.token, ctx.agent_id)
    poll = polling.measure_polling(
        ctx.mode.api_url,
        ctx.token,
        turn_id,
        etag,
        connections=args.connections,
        duration=args.duration,
        load=args.load,
        pk_url=ctx.mode.pk_url,
    )
    for conns in args.connections:
        pk = poll["pk"][conns]["requests_per_s"]
        print(f"   PK-read yardstick {conns:>3} conns {fmt_rps(poll['pk'][conns])}")
        for path in ("200", "304"):
            figures = poll[path][conns]
            print(
                f"   turn {path}          {conns:>3} conns {fmt_rps(figures)}"
                f"  = {figures['requests_per_s'] / pk:.0%} of PK read"
            )
    return poll


def scenario_history(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    print(
        f"-- history pages of {history.PAGE_LIMIT} ({args.history_requests} sequential requests"
        " each; every page of every size takes turns in rounds)"
    )
    engine = make_engine(ctx.mode.env["DATABASE_URL"], pool_size=1)
    user_id, _ = history.user_and_agent(engine, BENCH_EMAIL)
    paths = history.all_page_paths(engine, user_id, ctx.agent_id, args.sizes, print)
    engine.dispose()
    pages: dict[int, dict[str, Any]] = {size: {} for size in args.sizes}
    measured = history.measure_pages(
        ctx.mode.api_url, ctx.token, paths, requests=args.history_requests
    )
    for (size, kind), summary in measured.items():
        pages[size][kind] = summary
        print(
            f"   {size:>9,} msgs {kind:<6} {fmt_latency(summary)}"
            f"  = {summary['p50_ms'] / ctx.base_rt:.1f}x baseline"
        )
    return pages


SCENARIOS = {
    "yardsticks": scenario_yardsticks,
    "latency": scenario_latency,
    "throughput": scenario_throughput,
    "polling": scenario_polling,
    "history": scenario_history,
    # Agents on a slow LLM (bench/slow_scenarios.py).
    **slow_scenarios.SCENARIOS,
}


def measure_all(
    mode: Mode, token: str, baseline: dict[str, Any], args, baseline_app: Celery | None = None
) -> dict[str, Any]:
    print(f"\n== {mode.label}")
    for key, value in mode.conditions.items():
        print(f"   {key}: {value}")
    print("-- raw Celery baseline (a separate tiny app; one task = one INSERT)")
    print(f"   noop  round trip {fmt_latency(baseline['noop_round_trip'])}")
    print(f"   write round trip {fmt_latency(baseline['write_round_trip'])}")
    print(
        f"   write burst      {baseline['write_tasks_per_s']} tasks/s"
        f" (1 client submits {args.burst}, then gets all)"
    )
    with setup_client(mode.api_url, token) as rc:
        agent_id = turns.create_agent(rc)
    ctx = Context(mode, token, agent_id, baseline, args, baseline_app)
    results: dict[str, Any] = {"baseline": baseline}
    for name in args.only or SCENARIOS:
        settle(mode.env["DATABASE_URL"])
        results[name] = SCENARIOS[name](ctx)
    results["targets"] = check_targets(results, args)
    print(f"-- targets ({mode.label})")
    for line in results["targets"]["lines"]:
        print(f"   {line}")
    return results


def settle(database_url: str, timeout: float = 60.0) -> None:
    """Start each scenario from a quiet system: no turn of an earlier one still queued or
    running, and PostgreSQL's tables vacuumed and analysed, as pgbench does before a run
    (autovacuum, triggered by the writes of the scenario before, otherwise ran during the
    next one's measurements)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        deadline = time.monotonic() + timeout
        with engine.connect() as conn:
            while time.monotonic() < deadline and conn.scalar(
                text("SELECT count(*) FROM turns WHERE status IN ('pending', 'queued', 'running')")
            ):
                conn.rollback()
                time.sleep(0.2)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM (ANALYZE)"))
    finally:
        engine.dispose()


def _verdict(ok: bool) -> str:
    return "MET " if ok else "MISS"


def check_targets(results: dict[str, Any], args) -> dict[str, Any]:
    """The issue's targets, for the scenarios that ran."""
    baseline = results["baseline"]
    lines, met = [], {}
    rt = baseline["write_round_trip"]["p50_ms"]
    tps = baseline["write_tasks_per_s"]
    if "latency" in results:
        figures = results["latency"][LONG_POLL]
        p50 = figures["latency"]["p50_ms"]
        # Against the write round trips measured between its rounds, if they were.
        rt = figures.get("baseline_write_round_trip", {}).get("p50_ms", rt)
        met["latency"] = p50 <= LATENCY_TARGET * rt
        lines.append(
            f"{_verdict(met['latency'])} turn latency p50 {p50:.2f} ms = {p50 / rt:.2f}x raw"
            f" Celery write round trip ({rt:.2f} ms); target <= {LATENCY_TARGET}x"
        )
    if 8 in results.get("throughput", {}):
        turns_8 = results["throughput"][8]["turns_per_s"]
        met["throughput"] = turns_8 >= THROUGHPUT_TARGET * tps
        lines.append(
            f"{_verdict(met['throughput'])} 8-client throughput {turns_8:.1f} turns/s"
            f" = {turns_8 / tps:.0%} of raw Celery writes ({tps:.0f}/s);"
            f" target >= {THROUGHPUT_TARGET:.0%}"
        )
    if "polling" in results:
        poll = results["polling"]
        ratios = {
            f"{path}@{conns}": poll[path][conns]["requests_per_s"]
            / poll["pk"][conns]["requests_per_s"]
            for path in ("200", "304")
            for conns in args.connections
        }
        met["polling"] = all(r >= POLLING_TARGET for r in ratios.values())
        lines.append(
            f"{_verdict(met['polling'])} polling vs PK read: "
            + ", ".join(f"{k} {v:.0%}" for k, v in ratios.items())
            + f"; target >= {POLLING_TARGET:.0%} each"
        )
    if "history" in results:
        pages = results["history"]
        sizes = sorted(pages)
        worst_p99 = max(s["p99_ms"] for size in sizes for s in pages[size].values())
        flatness = {
            kind: pages[sizes[-1]][kind]["p50_ms"] / pages[sizes[0]][kind]["p50_ms"]
            for kind in pages[sizes[0]]
        }
        met["history"] = worst_p99 < HISTORY_P99_MS and all(
            f <= HISTORY_FLATNESS for f in flatness.values()
        )
        lines.append(
            f"{_verdict(met['history'])} history: worst p99 {worst_p99:.2f} ms"
            f" (target < {HISTORY_P99_MS:g}); p50 at {sizes[-1]:,} / at {sizes[0]:,}: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in flatness.items())
            + f" (target <= {HISTORY_FLATNESS}x)"
        )
    slow_scenarios.check_targets(results, met, lines)
    return {"met": met, "lines": lines}


# -- the two shapes ------------------------------------------------------------------------------


def run_production(args) -> dict[str, Any]:
    env = service_env(args.database_url, args.broker_url)
    env["ROOMCAST_DB_POOL_SIZE"] = str(fitting_pool_size(args))
    prepare_database(env, args.fresh_db)
    redis.Redis.from_url(args.broker_url).flushdb()
    token = issue_token(env)
    api_port, pk_port = args.port, args.port + 1
    mode = Mode.on_ports(
        "production",
        "production shape: PostgreSQL + Redis, gunicorn, separate Celery workers",
        env,
        api_port,
    )
    gunicorn = (
        f"gunicorn gevent, {args.gunicorn_workers} workers x {args.gunicorn_connections}"
        " connections"
    )
    mode.conditions = {
        "machine": _machine(),
        "servers": _server_versions(args.database_url, args.broker_url),
        "api": f"{gunicorn} ('api:create_app()'), PK yardstick under the same settings",
        "workers": f"{args.worker_processes} x celery -A worker worker -Q turns,maintenance"
        f" (gevent, concurrency {args.worker_concurrency}) + celery beat",
        "baseline worker": f"celery -A bench.celery_baseline worker (prefork, concurrency "
        f"{args.baseline_concurrency})",
        "load": f"{tool(args.load)} for req/s; Python http.client keep-alive clients for turns",
    }
    started = [
        slow_scenarios.start_slow_llm("production", env, args),  # before what reads its catalog
        procs.gunicorn(
            "api",
            "api:create_app()",
            api_port,
            env,
            workers=args.gunicorn_workers,
            connections=args.gunicorn_connections,
        ),
        procs.gunicorn(
            "pk-yardstick",
            "bench.pk_app:create_app()",
            pk_port,
            env,
            workers=args.gunicorn_workers,
            connections=args.gunicorn_connections,
        ),
        *(
            procs.celery_worker(
                f"worker{n}",
                "worker",
                env,
                queues="turns,maintenance",
                concurrency=args.worker_concurrency,
            )
            for n in range(1, args.worker_processes + 1)
        ),
        procs.celery_beat("beat", "worker", env),
        procs.celery_worker(
            "baseline-worker",
            "bench.celery_baseline",
            env,
            queues=celery_baseline.QUEUE,
            concurrency=args.baseline_concurrency,
            pool="prefork",
        ),
    ]
    try:
        procs.wait_until(lambda: _ok(f"{mode.api_url}/api/v1/health"), "API", started)
        procs.wait_until(lambda: _ok(f"{mode.pk_url}/hello"), "PK yardstick", started)
        client_app = celery_baseline.make_app(args.broker_url)
        celery_baseline.register(client_app)
        procs.wait_until(
            lambda: client_app.send_task(celery_baseline.NOOP, args=[0]).get(timeout=2) == 0,
            "baseline worker",
            started,
        )
        procs.wait_until(
            lambda: client_app.send_task("roomcast.ping", queue="turns").get(timeout=2),
            "Roomcast worker",
            started,
        )
        if args.serve:
            serve_until_interrupted(mode, token, started)
            return {}
        baseline = celery_baseline.measure(
            client_app, round_trips=args.round_trips, burst=args.burst
        )
        return measure_all(mode, token, baseline, args, client_app) | {
            "conditions": mode.conditions
        }
    finally:
        for proc in started:
            proc.stop()


def serve_until_interrupted(mode: Mode, token: str, started: list[procs.Proc]) -> None:
    """--serve: leave the stack running for a profiler or a single script, until Ctrl-C."""
    print(f"{mode.label} is up; Ctrl-C (or SIGTERM) stops it.")
    print(f"  export BENCH_BASE_URL={mode.api_url} BENCH_TOKEN={token}")
    print(f"  DATABASE_URL={mode.env['DATABASE_URL']}  PK yardstick {mode.pk_url}")
    for proc in started:
        print(f"  {proc.name:<16} pid {proc.pid:<8} log {proc.log_path.relative_to(procs.ROOT)}")
    print("  e.g. py-spy record --gil -d 10 -p PID  (a worker pid: pgrep -P PID)")
    try:
        while True:
            for proc in started:
                proc.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print()


def embedded_baseline(args, env: dict[str, str]) -> dict[str, Any]:
    """The baseline runs first, alone: an in-memory broker only works inside one process."""
    out = _run(
        [
            sys.executable,
            "-m",
            "bench.celery_baseline",
            "--embedded",
            "--json",
            "--round-trips",
            str(args.round_trips),
            "--burst",
            str(args.burst),
        ],
        env,
    )
    return json.loads(out.strip().splitlines()[-1])


def run_embedded(args) -> dict[str, Any]:
    database_url = f"sqlite:///{EMBEDDED_DATABASE}"
    env = service_env(database_url, None)
    prepare_database(env, args.fresh_db)
    token = issue_token(env)
    baseline = {} if args.serve else embedded_baseline(args, env)
    api_port, pk_port = args.port + 10, args.port + 11
    mode = Mode.on_ports(
        "embedded",
        "embedded mode: serve.py (SQLite + in-memory broker, gevent worker in-process)",
        env,
        api_port,
    )
    mode.conditions = {
        "machine": _machine(),
        "servers": _server_versions(database_url, None),
        "api": "serve.py (gevent pywsgi server + embedded Celery worker, gevent pool);"
        " PK yardstick on werkzeug's threaded server",
        "baseline": "in-process Celery app, memory broker (5 ms polling), threads worker",
        "load": f"{tool(args.load)} for req/s; Python http.client keep-alive clients for turns",
    }
    started = [
        slow_scenarios.start_slow_llm("embedded", env, args),  # before what reads its catalog
        procs.python("serve", ["serve.py", "--port", str(api_port)], env),
        procs.python("pk-yardstick-embedded", ["-m", "bench.pk_app", "--port", str(pk_port)], env),
    ]
    try:
        procs.wait_until(lambda: _ok(f"{mode.api_url}/api/v1/health"), "serve.py", started)
        procs.wait_until(lambda: _ok(f"{mode.pk_url}/hello"), "PK yardstick", started)
        if args.serve:
            serve_until_interrupted(mode, token, started)
            return {}
        return measure_all(mode, token, baseline, args) | {"conditions": mode.conditions}
    finally:
        for proc in started:
            proc.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Roomcast benchmarks: production shape and embedded mode."
    )
    parser.add_argument("--mode", choices=("both", "production", "embedded"), default="both")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL database for the production shape (its schema is migrated; "
        "--fresh-db drops it first)",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER_URL),
        help="Redis database for the production shape (flushed at start)",
    )
    parser.add_argument("--fresh-db", action="store_true", help="drop and re-create the schema")
    parser.add_argument("--port", type=int, default=8100, help="first of the ports used")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-connections", type=int, default=2000)
    parser.add_argument("--worker-concurrency", type=int, default=500)
    # One per core, as README "Concurrency" advises for a worker host (on this machine the
    # workers share the cores with everything else).
    parser.add_argument("--worker-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline-concurrency", type=int, default=2)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per req/s figure")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--turns", type=int, default=300, help="sequential turns per latency run")
    parser.add_argument("--turn-duration", type=float, default=10.0, help="seconds per throughput")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--round-trips", type=int, default=500, help="baseline round trips")
    parser.add_argument("--burst", type=int, default=2000, help="baseline burst size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 10_000, 1_000_000])
    parser.add_argument("--history-requests", type=int, default=200)
    slow_scenarios.add_arguments(parser)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the shape, print its URLs, token and pids, and wait for Ctrl-C (profiling)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=tuple(SCENARIOS),
        help="run only these scenarios (the baseline always runs)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    procs.install_cleanup()
    raise_open_files_limit()  # for a thousand clients; the processes started inherit it
    started = time.monotonic()
    modes = ("production", "embedded") if args.mode == "both" else (args.mode,)
    for name in modes:
        results = run_production(args) if name == "production" else run_embedded(args)
        if args.serve:
            continue
        path = procs.LOG_DIR / f"results-{name}.json"
        path.write_text(json.dumps(results, indent=2, default=str))
        print(f"   (figures in {path.relative_to(procs.ROOT)})")
    print(f"\nbenchmarks done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
