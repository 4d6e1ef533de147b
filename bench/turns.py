"""Turn latency and throughput: POST a turn, poll it until it is terminal, repeat.

    python -m bench.turns latency --turns 300 --poll longpoll
    python -m bench.turns throughput --clients 8 --duration 10

Every agent answers on the built-in ``instant`` provider (a fixed short reply at once), so the
figures are Roomcast's own overhead: the API, the broker, the worker, the database.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from roomcast_client import Roomcast

from .client import TERMINAL, Client, add_target_args, fmt_latency, latency_summary, setup_client

POLL_MODES = ("longpoll", "etag")
CONTENT = "Benchmark turn: please answer."


def create_agent(rc: Roomcast) -> int:
    """An agent on the instant provider (any model name)."""
    return rc.agents.create(
        name=f"bench-{uuid.uuid4().hex[:8]}", provider="instant", model="instant"
    ).id


def agent_for(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``--agent-id`` given, or a new instant agent (``--token`` is required)."""
    if not args.token:
        parser.error("--token (or BENCH_TOKEN) is required")
    if args.agent_id:
        return args.agent_id
    with setup_client(args.base_url, args.token) as rc:
        return create_agent(rc)


def create_session(rc: Roomcast, agent_id: int) -> int:
    return rc.sessions.create(agent_id=agent_id).id


def run_turn(
    client: Client, session_id: int, *, poll: str = "longpoll", interval: float = 0.01
) -> tuple[float, str, int]:
    """One turn from POST to the first poll that sees it terminal.

    ``longpoll``: ``GET /turns/{id}?wait=10&until=terminal`` (answered when the turn ends).
    ``etag``: ``GET /turns/{id}`` with If-None-Match every ``interval`` seconds (304 while
    nothing changed). Returns (seconds, final status, GETs made).
    """
    started = time.perf_counter()
    response = client.expect(
        client.post(f"/api/v1/sessions/{session_id}/turns", {"content": CONTENT}), 202
    )
    turn = response.json()
    path = f"/api/v1/turns/{turn['id']}"
    status, etag, gets = turn["status"], None, 0
    while status not in TERMINAL:
        if poll == "longpoll":
            response = client.expect(client.get(f"{path}?wait=10&until=terminal"), 200)
        else:
            time.sleep(interval)
            response = client.expect(
                client.get(path, headers={"If-None-Match": etag} if etag else None), 200, 304
            )
        gets += 1
        if response.status == 200:
            etag = response.headers.get("etag")
            status = response.json()["status"]
    return time.perf_counter() - started, status, gets


def measure_latency(
    base_url: str,
    token: str,
    agent_id: int,
    *,
    turns: int,
    poll: str,
    interval: float = 0.01,
    warmup: int = 10,
    rounds: int = 1,
    before_round: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Sequential turns on one session; POST-to-completed percentiles.

    The turns run in ``rounds`` equal rounds, each after ``before_round`` (a yardstick measured
    in between, so that a drift of the machine's speed weighs on both alike).
    """
    with setup_client(base_url, token) as rc:
        session_id = create_session(rc, agent_id)
    client = Client(base_url, token)
    for _ in range(warmup):
        run_turn(client, session_id, poll=poll, interval=interval)
    latencies, failed, gets = [], 0, 0
    per_round = math.ceil(turns / rounds)
    for index in range(turns):
        if before_round is not None and index % per_round == 0:
            before_round()
        seconds, status, n = run_turn(client, session_id, poll=poll, interval=interval)
        gets += n
        if status == "completed":
            latencies.append(seconds)
        else:
            failed += 1
    client.close()
    return {
        "latency": latency_summary(latencies),
        "failed": failed,
        "gets_per_turn": round(gets / max(turns, 1), 2),
    }


def measure_throughput(
    base_url: str,
    token: str,
    agent_id: int,
    *,
    clients: int,
    duration: float,
    poll: str = "longpoll",
    interval: float = 0.01,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """``clients`` threads, each on its own session, turn after turn for ``duration`` seconds.

    Turns completed within the window count; each client's first ``warmup`` seconds do not.
    """
    with setup_client(base_url, token) as rc:
        sessions = [create_session(rc, agent_id) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    window: dict[str, float] = {}
    results: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        client = Client(base_url, token)
        try:
            barrier.wait()
            while time.perf_counter() < window["warm"]:
                run_turn(client, sessions[index], poll=poll, interval=interval)
            while True:
                seconds, status, _ = run_turn(client, sessions[index], poll=poll, interval=interval)
                if time.perf_counter() > window["end"]:
                    break
                if status == "completed":
                    results[index].append(seconds)
                else:
                    failures[index] += 1
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    window["warm"] = now + warmup
    window["end"] = now + warmup + duration
    barrier.wait()
    for thread in threads:
        thread.join(duration + warmup + 60)
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}") from errors[0]
    latencies = [s for per_client in results for s in per_client]
    return {
        "turns_per_s": round(len(latencies) / duration, 1),
        "latency": latency_summary(latencies),
        "failed": sum(failures),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--agent-id", type=int, help="an agent on provider instant (else made)")
    parser.add_argument("--poll", choices=POLL_MODES, default="longpoll")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="etag polling interval")
    sub = parser.add_subparsers(dest="command", required=True)
    latency = sub.add_parser("latency", help="sequential turns on one session")
    latency.add_argument("--turns", type=int, default=300)
    throughput = sub.add_parser("throughput", help="concurrent clients for a fixed time")
    throughput.add_argument("--clients", type=int, default=8)
    throughput.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    agent_id = agent_for(parser, args)
    interval = args.interval_ms / 1000
    poll = args.poll if args.poll == "longpoll" else f"etag every {args.interval_ms:g} ms"
    if args.command == "latency":
        result = measure_latency(
            args.base_url, args.token, agent_id, turns=args.turns, poll=args.poll, interval=interval
        )
        print(f"turn latency ({poll}, {args.turns} sequential turns, {args.base_url}):")
        print(f"  POST-to-completed {fmt_latency(result['latency'])}  failed {result['failed']}")
    else:
        result = measure_throughput(
            args.base_url,
            args.token,
            agent_id,
            clients=args.clients,
            duration=args.duration,
            poll=args.poll,
            interval=interval,
        )
        print(f"turn throughput ({args.clients} clients, {args.duration:g} s, {poll}):")
        print(f"  {result['turns_per_s']} turns/s  {fmt_latency(result['latency'])}")


if __name__ == "__main__":
    main()
