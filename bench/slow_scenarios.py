"""The benchmark scenarios on a slow LLM: many clients waiting on turns that take seconds.

Every agent here is on the provider ``slow``: bench/slow_llm.py, run as its own process on
loopback, named to Roomcast by a provider catalog (ROOMCAST_PROVIDERS_FILE) written for the run.
The clients are bench/slow_turns.py, run in a process of their own (asyncio, one keep-alive
connection each), so they share no interpreter lock with anything measured.

- ``slow_longpoll``: N clients, each on its own session, post a turn and long-poll it until it
  ends, again and again: turns/s as a share of the ideal N / delay, and post -> end p50/p99.
- ``slow_sse``: the same, each client reading the turn's event stream until ``event: end``
  (skipped, saying so, when the API has no ``GET /api/v1/turns/{id}/events``).
- ``waiting_probe``: W clients long-poll turns whose replies take long while a probe times
  ``GET /api/v1/agents`` (p50/p99); then the turns end, all due in the same instant, and the
  clients' wake-ups are timed: 1,000 answers at once.
- ``waiting_spread``: the same clients and turns, the replies due at random over
  ``--waiting-spread`` seconds (10: a turn ends every 0.1 s on average), no probe: the wake-up
  while turns end one by one.

Both waiting scenarios report each role's CPU time from the first turn's end to the last answer
(bench/cpu_use.py).

Wake-up (all four): the client's receive time minus the turn's ``completed_at``, both wall
clocks of this host (the worker sets ``completed_at`` just before the commit that ends the turn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from sqlalchemy.orm import Session

from models import Turn, lifecycle
from models.db import make_engine
from models.turn_events import turn_events
from models.turns import CANCELLED

from . import polling, procs, slow_llm
from .aioclient import Connection, HTTPError
from .client import Client, fmt_latency, latency_summary, setup_client
from .cpu_use import CpuSampler

SLOW_PROVIDER = "slow"
SLOW_KEY_ENV = "BENCH_SLOW_LLM_KEY"
SLOW_URL_ENV = "BENCH_SLOW_LLM_URL"
# The slow LLM's port, after the API's (production: API, PK yardstick; embedded: +10, +11).
PORT_OFFSET = {"production": 5, "embedded": 15}

# Targets.
TARGET_CLIENTS = 256
SHARE_TARGET = {"production": 0.85, "embedded": 0.70}  # of the ideal clients / delay turns/s
LATENCY_P99_S = 3.0  # post -> end p99, production shape, at 2 s per reply
PROBE_P99_MS = 50.0  # GET /api/v1/agents while the waiters wait
WAKE_UP_P99_MS = 100.0  # turn's completed_at -> waiting client has the answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "slow LLM scenarios (slow_longpoll, slow_sse, waiting_probe, waiting_spread)"
    )
    group.add_argument("--slow-delay", type=float, default=2.0, help="seconds per reply")
    group.add_argument("--slow-clients", type=int, nargs="+", default=[TARGET_CLIENTS])
    group.add_argument("--slow-duration", type=float, default=20.0, help="seconds counted")
    group.add_argument(
        "--slow-warmup", type=float, help="seconds before the count (default 2 x --slow-delay)"
    )
    group.add_argument(
        "--slow-sse-tokens",
        action="store_true",
        help="slow_sse asks for token deltas too (?tokens=true)",
    )
    group.add_argument("--waiters", type=int, default=1000, help="clients waiting (waiting_probe)")
    group.add_argument("--waiting-turns", type=int, default=100, help="turns they wait on")
    group.add_argument("--waiting-delay", type=float, default=20.0, help="seconds per long reply")
    group.add_argument("--probes", type=int, default=200, help="GET /api/v1/agents probes")
    group.add_argument(
        "--waiting-spread",
        type=float,
        default=10.0,
        help="waiting_spread: the replies take --waiting-delay plus up to this many seconds",
    )


# -- the slow LLM process --------------------------------------------------------------------


def configure(env: dict[str, str], port: int) -> str:
    """Name the slow LLM on ``port`` in a provider catalog for the services started with
    ``env`` (written to var/bench/); its URL."""
    url = f"http://127.0.0.1:{port}"
    procs.LOG_DIR.mkdir(parents=True, exist_ok=True)
    catalog = procs.LOG_DIR / f"providers-{port}.toml"
    catalog.write_text(slow_llm.catalog_toml(f"{url}/v1", name=SLOW_PROVIDER))
    env.update({"ROOMCAST_PROVIDERS_FILE": str(catalog), SLOW_KEY_ENV: "bench", SLOW_URL_ENV: url})
    return url


def start_slow_llm(mode_name: str, env: dict[str, str], args) -> procs.Proc:
    """Write the catalog into ``env`` and start the slow LLM (before the services that read it)."""
    port = args.port + PORT_OFFSET[mode_name]
    url = configure(env, port)
    proc = procs.python(
        f"slow-llm-{mode_name}",
        ["-m", "bench.slow_llm", "--port", str(port), "--delay", f"{args.slow_delay:g}"],
        env,
    )
    procs.wait_until(lambda: _llm_stats(url) is not None, "slow LLM", [proc])
    return proc


def _llm_stats(url: str, reset: bool = False) -> dict[str, Any] | None:
    client = Client(url, timeout=5)
    try:
        response = client.get("/stats?reset=1" if reset else "/stats")
        return response.json() if response.status == 200 else None
    finally:
        client.close()


def _wait_llm_idle(ctx, timeout: float) -> None:
    """Until no call of an earlier scenario is still in the slow LLM (a cancelled turn's call
    runs to its end), so the next scenario starts with every worker free."""
    url = ctx.mode.env[SLOW_URL_ENV]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (_llm_stats(url) or {}).get("in_flight"):
        time.sleep(0.2)


def cancel_in_database(env: dict[str, str], turn_ids: list[int]) -> int:
    """Cancel those of these turns still active as the API's cancel does (models.lifecycle, then
    a notification to their waiters); how many. The clients cancel the turns they leave open
    through the API, but an API whose every thread holds a wait does not answer them in time,
    and the waits it has queued then last until the turns end."""
    engine = make_engine(env["DATABASE_URL"], pool_size=1)
    events = turn_events(env.get("CELERY_BROKER_URL", "memory://"))
    cancelled = 0
    try:
        with Session(engine) as db:
            for turn_id in turn_ids:
                turn = db.get(Turn, turn_id)
                if turn is None or turn.status == CANCELLED:
                    continue
                lifecycle.cancel(db, turn, promote=False)
                db.commit()
                if turn.status == CANCELLED:
                    events.publish(turn_id, CANCELLED)
                    cancelled += 1
    finally:
        engine.dispose()
    return cancelled


def slow_agent(ctx, delay: float, spread: float = 0.0) -> int:
    """An agent on the slow LLM whose replies take ``delay`` seconds (with ``spread``: between
    ``delay`` and ``delay + spread``, drawn for each call); no tools."""
    model = f"delay-{delay:g}" + (f"-{delay + spread:g}" if spread else "")
    with setup_client(ctx.mode.api_url, ctx.token) as rc:
        agent = rc.agents.create(
            name=f"bench-slow-{uuid.uuid4().hex[:8]}",
            provider=SLOW_PROVIDER,
            model=model,
            tools=[],
        )
    return agent.id


# -- the clients' process ----------------------------------------------------------------------


def _clients(ctx, argv: list[str], on_line=None) -> dict[str, Any]:
    """Run bench/slow_turns.py with ``argv``; its result (``on_line`` sees every other line)."""
    env = {**os.environ, "BENCH_BASE_URL": ctx.mode.api_url, "BENCH_TOKEN": ctx.token}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(procs.ROOT), env.get("PYTHONPATH")]))
    log_path = procs.LOG_DIR / "slow-clients.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.slow_turns", "--json", *argv],
            cwd=procs.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            result = None
            assert proc.stdout is not None
            for line in proc.stdout:
                message = json.loads(line)
                if "result" in message:
                    result = message["result"]
                elif on_line is not None:
                    on_line(message)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if result is None:
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"the slow clients exited with {proc.returncode}:\n{tail}")
    return result


def sse_unavailable(ctx) -> str | None:
    """Why the API cannot stream a turn's events (None when it can): one finished turn's stream
    is read to its ``end``."""
    turn_id, _ = polling.finished_turn(ctx.mode.api_url, ctx.token, ctx.agent_id)

    async def read() -> str | None:
        conn = Connection(ctx.mode.api_url, ctx.token, timeout=15)
        try:
            events = await conn.events(f"/api/v1/turns/{turn_id}/events")
        except HTTPError as exc:
            return f"GET /api/v1/turns/{{id}}/events answered {exc.status}"
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return f"GET /api/v1/turns/{{id}}/events failed: {exc!r}"
        finally:
            conn.close()
        if not events or events[-1].name != "end":
            return "the event stream of a finished turn ended without an `end` event"
        return None

    return asyncio.run(read())


# -- scenarios -------------------------------------------------------------------------------


def _load(ctx, wait: str) -> dict[str, Any]:
    args = ctx.args
    warmup = 2 * args.slow_delay if args.slow_warmup is None else args.slow_warmup
    how = {
        "longpoll": "long-poll ?wait=30&until=terminal",
        "sse": "SSE GET /turns/{id}/events until `end`",
        "sse-tokens": "SSE GET /turns/{id}/events?tokens=true until `end`",
    }[wait]
    print(
        f"-- slow LLM, {how}: each client its own session and connection, post -> end, again;"
        f" {args.slow_delay:g} s per reply, {args.slow_duration:g} s counted after {warmup:g} s"
    )
    out: dict[str, Any] = {"mode": ctx.mode.name, "delay_s": args.slow_delay}
    if wait != "longpoll" and (reason := sse_unavailable(ctx)):
        print(f"   skipped: {reason} (no event streams in this version)")
        return out | {"skipped": reason}
    agent_id = slow_agent(ctx, args.slow_delay)
    llm_url = ctx.mode.env[SLOW_URL_ENV]
    for clients in args.slow_clients:
        _llm_stats(llm_url, reset=True)
        figures = _clients(
            ctx,
            [
                "--agent-id",
                str(agent_id),
                "--wait",
                wait,
                "load",
                "--clients",
                str(clients),
                "--duration",
                f"{args.slow_duration:g}",
                "--warmup",
                f"{warmup:g}",
                "--delay",
                f"{args.slow_delay:g}",
            ],
        )
        figures["llm_peak_in_flight"] = (_llm_stats(llm_url) or {}).get("peak_in_flight")
        figures["cancelled_in_database"] = cancel_in_database(
            ctx.mode.env, figures.pop("open_turn_ids")
        )
        out[clients] = figures
        print(
            f"   {clients:>4} clients {figures['turns_per_s']:>6.1f} turns/s"
            f" = {figures['share_of_ideal']:.0%} of ideal {figures['ideal_turns_per_s']:g}/s;"
            f" post -> end {fmt_latency(figures['latency'])}"
        )
        print(
            f"        wake-up (completed_at -> client) {fmt_latency(figures['wake_up'])};"
            f" LLM calls at once, at most {figures['llm_peak_in_flight']};"
            f" {figures['requests_per_turn']} waits/turn"
            + (f", {figures['deltas_per_turn']} deltas/turn" if wait == "sse-tokens" else "")
            + f"; statuses {figures['statuses']};"
            f" errors {figures['errors'] or 'none'}; open at the end {figures['open_at_end']}"
            f" (cancelled: {figures['cancelled_at_end']} by the API,"
            f" {figures['cancelled_in_database']} in the database); {_cost(figures)}"
        )
        _wait_llm_idle(ctx, args.slow_delay + 10)
    return out


def _cost(figures: dict[str, Any]) -> str:
    cost = figures["client_process"]
    return (
        f"the clients' process: {cost['cpu_s']:g} CPU s,"
        f" loop lag p99 {cost['loop_lag']['p99_ms']:.1f} ms"
    )


def scenario_slow_longpoll(ctx) -> dict[str, Any]:
    return _load(ctx, "longpoll")


def scenario_slow_sse(ctx) -> dict[str, Any]:
    return _load(ctx, "sse-tokens" if ctx.args.slow_sse_tokens else "sse")


# From the waiters' last request sent to the first probe.
SETTLE_SECONDS = 3.0


def probe(base_url: str, token: str, *, count: int, budget: float, interval: float = 0.02):
    """Time up to ``count`` sequential ``GET /api/v1/agents`` (one keep-alive connection; each
    probe's time includes a reconnection if the server closed it), starting none after
    ``budget`` seconds. (summary, failures)."""
    client = Client(base_url, token, timeout=budget + 30)
    samples: list[float] = []
    failures = 0
    try:
        deadline = time.monotonic() + budget
        while len(samples) + failures < count and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = client.get("/api/v1/agents").status == 200
            except OSError:
                ok = False
                client.close()
            if ok:
                samples.append(time.perf_counter() - started)
            else:
                failures += 1
            time.sleep(interval)
    finally:
        client.close()
    return latency_summary(samples), failures


def _waiting(ctx, spread: float, probes: bool) -> dict[str, Any]:
    """The waiters on turns of the slow LLM: all their replies due at once (``spread`` 0), or
    spread uniformly over ``spread`` seconds; with ``probes``, the probe times the API
    meanwhile."""
    args = ctx.args
    turns = min(args.waiting_turns, args.waiters)
    due = f"{args.waiting_delay:g} s" + (f" to {args.waiting_delay + spread:g} s" if spread else "")
    print(
        f"-- {args.waiters} clients long-polling {turns} turns of {due} (slow LLM)"
        + (
            f", meanwhile {args.probes} probes of GET /api/v1/agents; then the turns end"
            if probes
            else "; the turns end over the spread, each client's wake-up is timed"
        )
    )
    agent_id = slow_agent(ctx, args.waiting_delay, spread)
    llm_url = ctx.mode.env[SLOW_URL_ENV]
    out: dict[str, Any] = {
        "mode": ctx.mode.name,
        "waiters": args.waiters,
        "turns": turns,
        "spread_s": spread,
    }

    def on_line(message: dict[str, Any]) -> None:
        if "ready" not in message:
            return
        out["ready_after_s"] = message["ready"]["after_s"]
        if not probes:
            return
        # Sent is not yet served: the API takes a second or so to read and subscribe a thousand
        # new waiters, and a probe in that burst measures the arrivals (its first probes took
        # 150-1,000 ms then), not what the waiting costs.
        time.sleep(SETTLE_SECONDS)
        out["llm_in_flight_during_probe"] = (_llm_stats(llm_url) or {}).get("in_flight")
        budget = max(1.0, args.waiting_delay - message["ready"]["after_s"] - SETTLE_SECONDS - 2.0)
        out["probe"], out["probe_failures"] = probe(
            ctx.mode.api_url, ctx.token, count=args.probes, budget=budget
        )

    argv = ["--agent-id", str(agent_id), "waiting", "--waiters", str(args.waiters)]
    argv += ["--turns", str(turns), "--deadline", f"{args.waiting_delay + spread + 20:g}"]
    cpu = CpuSampler() if CpuSampler.available() else None
    with cpu or contextlib.nullcontext():
        out["clients"] = _clients(ctx, argv, on_line)
    if cpu and (window := out["clients"].get("ends_window")):
        first_end, last_end, last_answer = window
        out["ends_spread_s"] = round(last_end - first_end, 3)
        out["cpu_s_over_the_ends"] = cpu.used(first_end, last_answer)
        out["seconds_over_the_ends"] = round(last_answer - first_end, 3)
    figures = out["clients"]
    figures["cancelled_in_database"] = cancel_in_database(ctx.mode.env, figures.pop("turn_ids"))
    if "probe" in out:
        print(
            f"   probe GET /api/v1/agents {fmt_latency(out['probe'])}  (of {args.probes};"
            f" failed {out['probe_failures']}; all waiters' requests sent"
            f" {out['ready_after_s']} s after the turns were posted;"
            f" LLM calls in flight {out['llm_in_flight_during_probe']})"
        )
    elif probes:
        print("   probe not run: the waiters did not all get their request out")
    print(
        f"   wake-up (completed_at -> client) {fmt_latency(figures['wake_up'])};"
        f" statuses {figures['statuses']}; still waiting at the deadline"
        f" {figures['still_waiting_at_deadline']}; errors {figures['errors'] or 'none'};"
        f" turns cancelled at the end: {figures['cancelled_at_end']} by the API,"
        f" {figures['cancelled_in_database']} in the database; {_cost(figures)}"
    )
    if used := out.get("cpu_s_over_the_ends"):
        print(
            f"   CPU from the first turn's end to the last answer"
            f" ({out['seconds_over_the_ends']:.2f} s; the ends spread over"
            f" {out['ends_spread_s']:.2f} s): "
            + ", ".join(f"{role} {seconds:.2f} s" for role, seconds in used.items())
        )
    _wait_llm_idle(ctx, args.waiting_delay + spread + 10)
    return out


def scenario_waiting_probe(ctx) -> dict[str, Any]:
    return _waiting(ctx, 0.0, probes=True)


def scenario_waiting_spread(ctx) -> dict[str, Any]:
    return _waiting(ctx, ctx.args.waiting_spread, probes=False)


SCENARIOS = {
    "slow_longpoll": scenario_slow_longpoll,
    "slow_sse": scenario_slow_sse,
    "waiting_probe": scenario_waiting_probe,
    "waiting_spread": scenario_waiting_spread,
}


# -- targets -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "MET " if ok else "MISS"


def check_targets(results: dict[str, Any], met: dict[str, bool], lines: list[str]) -> None:
    """Add the slow-LLM targets of the scenarios that ran to ``met`` and ``lines``."""
    for name in ("slow_longpoll", "slow_sse"):
        figures = results.get(name)
        if not figures:
            continue
        if "skipped" in figures:
            lines.append(f"n/a  {name}: skipped ({figures['skipped']})")
            continue
        run = figures.get(TARGET_CLIENTS) or figures.get(str(TARGET_CLIENTS))
        if run is None:
            lines.append(f"n/a  {name}: the target is for {TARGET_CLIENTS} clients, not run")
            continue
        mode = figures["mode"]
        share, p99 = run["share_of_ideal"], run["latency"]["p99_ms"] / 1000
        target = SHARE_TARGET[mode]
        ok = share >= target
        p99_part = f", p99 {p99:.2f} s"
        if mode == "production":
            ok = ok and p99 <= LATENCY_P99_S
            p99_part += f" (target <= {LATENCY_P99_S:g} s)"
        met[name] = ok
        lines.append(
            f"{_verdict(ok)} {name}: {TARGET_CLIENTS} clients at {figures['delay_s']:g} s per"
            f" reply {run['turns_per_s']:.1f} turns/s = {share:.0%} of ideal"
            f" {run['ideal_turns_per_s']:g}/s (target >= {target:.0%}){p99_part}"
        )
    waiting = results.get("waiting_probe")
    if waiting:
        probe_p99 = waiting.get("probe", {}).get("p99_ms", float("nan"))
        wake_p99 = waiting["clients"]["wake_up"]["p99_ms"]
        met["waiting_probe"] = probe_p99 < PROBE_P99_MS and wake_p99 < WAKE_UP_P99_MS
        lines.append(
            f"{_verdict(met['waiting_probe'])} waiting_probe: {waiting['waiters']} waiting"
            f" clients, probe p99 {probe_p99:.1f} ms (target < {PROBE_P99_MS:g}),"
            f" wake-up p99 {wake_p99:.1f} ms (target < {WAKE_UP_P99_MS:g}) with all"
            f" {waiting['turns']} turns ending at once"
        )
    spread = results.get("waiting_spread")
    if spread:
        wake_p99 = spread["clients"]["wake_up"]["p99_ms"]
        met["waiting_spread"] = wake_p99 < WAKE_UP_P99_MS
        lines.append(
            f"{_verdict(met['waiting_spread'])} waiting_spread: {spread['waiters']} waiting"
            f" clients, wake-up p99 {wake_p99:.1f} ms (target < {WAKE_UP_P99_MS:g}) with the"
            f" {spread['turns']} turns ending over {spread['spread_s']:g} s"
        )
