"""Many clients, each waiting on its turn, against agents on a slow LLM (bench/slow_llm.py).

    python -m bench.slow_turns load --agent-id 7 --clients 256 --duration 20 --wait longpoll
    python -m bench.slow_turns load --agent-id 7 --clients 256 --duration 20 --wait sse
    python -m bench.slow_turns waiting --agent-id 8 --waiters 1000 --turns 100 --deadline 40

``load``: N clients, each on its own session and its own keep-alive connection, post a turn and
wait for its end, again and again: by long-poll (``GET /api/v1/turns/{id}?wait=30&until=
terminal``, again while the turn is not over) or by the turn's event stream (``GET
/api/v1/turns/{id}/events`` until ``event: end``). The clients start at random moments over the
first reply's delay, so their turns do not arrive in waves; turns that end in the window after
the warm-up count. At the end of the window the turns still open are cancelled.

``waiting``: W clients long-poll ``turns`` turns (W / turns clients on each) of an agent whose
replies take long; once every client has sent its request the process prints a ``ready`` line
(a probe then measures the API meanwhile, see bench/slow_scenarios.py), and when the turns end
each client notes when it heard.

Wake-up: for every turn that a client saw completed, its receive time (wall clock) minus the
turn's ``completed_at`` (set by the worker from its own wall clock, on the same host, just
before the commit that ends the turn): commit, notification, the API's wake-up, the answer.

All clients run in one asyncio loop in this process (no threads), apart from anything measured;
the figures are printed as one JSON line (``--json``) or as text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from roomcast_client import AsyncRoomcast

from .aioclient import Connection, HTTPError
from .client import TERMINAL, add_target_args, fmt_latency, latency_summary
from .rlimits import raise_open_files_limit

CONTENT = "Benchmark turn: please answer."
WAIT_MODES = ("longpoll", "sse", "sse-tokens")
LONG_POLL_SECONDS = 30
# Requests of set-up and clean-up (sessions, turns to cancel) at once, not to swamp the API.
SETUP_CONCURRENCY = 32
CANCEL_TIMEOUT = 10.0


def completed_at(turn: dict[str, Any]) -> float | None:
    """The turn's ``completed_at`` as a Unix time (naive means UTC)."""
    value = turn.get("completed_at")
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class Ended:
    """How a client saw a turn end."""

    turn: dict[str, Any]
    seen: float  # perf_counter
    seen_wall: float  # time.time
    requests: int  # GETs (long-poll) or streams (SSE) it took
    deltas: int = 0  # token deltas received (SSE with ?tokens=true)

    @property
    def wake_up(self) -> float | None:
        done = completed_at(self.turn)
        return None if done is None else self.seen_wall - done


async def wait_longpoll(conn: Connection, turn: dict[str, Any], deadline: float) -> Ended:
    """Long-poll the turn until it is terminal (again after each ``wait`` that ran out)."""
    path = f"/api/v1/turns/{turn['id']}?wait={LONG_POLL_SECONDS}&until=terminal"
    requests = 0
    while turn["status"] not in TERMINAL and time.perf_counter() < deadline:
        response = await conn.get(path)
        requests += 1
        if response.status != 200:
            raise HTTPError(response.status, response.body)
        turn = response.json()
    return Ended(turn, time.perf_counter(), time.time(), requests)


async def wait_sse(
    conn: Connection, turn: dict[str, Any], deadline: float, tokens: bool = False
) -> Ended:
    """Read the turn's event stream (with its token deltas if ``tokens``) until ``end``, whose
    data is the turn, reopening it if it ended without one."""
    path = f"/api/v1/turns/{turn['id']}/events" + ("?tokens=true" if tokens else "")
    requests = deltas = 0
    while time.perf_counter() < deadline:
        events = await conn.events(path)
        requests += 1
        deltas += sum(event.name == "delta" for event in events)
        if events and events[-1].name == "end":
            end = events[-1]
            return Ended(end.json(), end.received, end.received_wall, requests, deltas)
    return Ended(turn, time.perf_counter(), time.time(), requests, deltas)


async def wait_sse_tokens(conn: Connection, turn: dict[str, Any], deadline: float) -> Ended:
    return await wait_sse(conn, turn, deadline, tokens=True)


WAITERS = {"longpoll": wait_longpoll, "sse": wait_sse, "sse-tokens": wait_sse_tokens}


async def post_turn(conn: Connection, session_id: int) -> dict[str, Any]:
    response = await conn.post(f"/api/v1/sessions/{session_id}/turns", {"content": CONTENT})
    if response.status not in (200, 202):
        raise HTTPError(response.status, response.body)
    return response.json()


async def create_sessions(base_url: str, token: str, agent_id: int, count: int) -> list[int]:
    """Set-up, by the Python client (the clients' own requests use aioclient's bare
    connections, whose cost is all but nil), SETUP_CONCURRENCY at a time."""
    bound = asyncio.Semaphore(SETUP_CONCURRENCY)

    async with AsyncRoomcast(base_url, token=token, timeout=60) as rc:

        async def one() -> int:
            async with bound:
                return (await rc.sessions.create(agent_id=agent_id)).id

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def cancel_turns(
    base_url: str, token: str, turn_ids: list[int], timeout: float = CANCEL_TIMEOUT
) -> int:
    """Cancel these turns (those already over answer 409); how many were cancelled. Gives up
    after ``timeout`` seconds: an API whose every thread holds a wait answers nothing sooner
    (bench/slow_scenarios.py then cancels what is left in the database)."""

    def cancel(turn_id: int):
        async def one(conn: Connection) -> bool:
            response = await conn.post(f"/api/v1/turns/{turn_id}/cancel", None)
            return response.status == 200

        return one

    try:
        async with asyncio.timeout(timeout):
            return sum(await _bounded(base_url, token, [cancel(t) for t in turn_ids], timeout))
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return 0


async def _bounded(base_url: str, token: str, jobs: list, timeout: float = 60.0) -> list:
    """Run ``jobs`` (each ``async f(conn)``) on SETUP_CONCURRENCY connections, in order."""
    results: list[Any] = [None] * len(jobs)
    queue = list(enumerate(jobs))

    async def worker() -> None:
        conn = Connection(base_url, token, timeout)
        try:
            while queue:
                index, job = queue.pop()
                results[index] = await job(conn)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(min(SETUP_CONCURRENCY, len(jobs)))))
    return results


class SelfCheck:
    """What the clients cost themselves while they run: this process's CPU seconds, and how
    late its loop wakes a 10 ms sleep (a late loop would add its lag to every figure)."""

    TICK = 0.010

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.cpu = 0.0

    async def __aenter__(self) -> SelfCheck:
        self._cpu_at_start = time.process_time()
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._ticker.cancel()
        await asyncio.gather(self._ticker, return_exceptions=True)
        self.cpu = time.process_time() - self._cpu_at_start

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.lags.append(time.perf_counter() - started - self.TICK)

    def figures(self) -> dict[str, Any]:
        return {"cpu_s": round(self.cpu, 2), "loop_lag": latency_summary(self.lags)}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    wake_ups: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    deltas: int = 0
    turns: int = 0
    open_turns: dict[int, int] = field(default_factory=dict)  # client -> turn id

    def error(self, exc: BaseException) -> None:
        key = f"{exc.status}" if isinstance(exc, HTTPError) else type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


async def run_load(
    base_url: str,
    token: str,
    agent_id: int,
    *,
    clients: int,
    duration: float,
    warmup: float,
    wait: str = "longpoll",
    delay: float = 2.0,
    timeout: float = 75.0,
) -> dict[str, Any]:
    """``clients`` clients looping post -> wait for ``warmup + duration`` seconds; the figures
    of the turns that ended within the last ``duration`` seconds."""
    waiter = WAITERS[wait]
    sessions = await create_sessions(base_url, token, agent_id, clients)
    tally = Tally()
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)

    async def client(index: int) -> None:
        conn = Connection(base_url, token, timeout=timeout)
        await asyncio.sleep(random.uniform(0, min(delay, warmup) if warmup else 0))
        try:
            while time.perf_counter() < window[1]:
                try:
                    posted = time.perf_counter()
                    turn = await post_turn(conn, sessions[index])
                    tally.open_turns[index] = turn["id"]
                    ended = await waiter(conn, turn, window[1] + timeout)
                    tally.open_turns.pop(index, None)
                except (OSError, HTTPError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    tally.error(exc)
                    conn.close()
                    await asyncio.sleep(0.1)
                    continue
                if not window[0] <= ended.seen <= window[1]:
                    continue
                status = ended.turn["status"]
                tally.turns += 1
                tally.requests += ended.requests
                tally.deltas += ended.deltas
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                if status == "completed":
                    tally.latencies.append(ended.seen - posted)
                    if (wake := ended.wake_up) is not None:
                        tally.wake_ups.append(wake)
        finally:
            conn.close()

    async with SelfCheck() as check:
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    still_open = list(tally.open_turns.values())
    cancelled = await cancel_turns(base_url, token, still_open) if still_open else 0
    completed = tally.statuses.get("completed", 0)
    ideal = clients / delay
    return {
        "clients": clients,
        "wait": wait,
        "delay_s": delay,
        "duration_s": duration,
        "warmup_s": warmup,
        "turns_per_s": round(completed / duration, 1),
        "ideal_turns_per_s": round(ideal, 1),
        "share_of_ideal": round(completed / duration / ideal, 3),
        "latency": latency_summary(tally.latencies),
        "wake_up": latency_summary(tally.wake_ups),
        "statuses": tally.statuses,
        "requests_per_turn": round(tally.requests / max(tally.turns, 1), 2),
        "deltas_per_turn": round(tally.deltas / max(tally.turns, 1), 2),
        "errors": tally.errors,
        "client_process": check.figures(),
        "open_at_end": len(still_open),
        "cancelled_at_end": cancelled,
        "open_turn_ids": still_open,
    }


async def run_waiting(
    base_url: str,
    token: str,
    agent_id: int,
    *,
    waiters: int,
    turns: int,
    deadline: float,
    wait: str = "longpoll",
    ready=None,
) -> dict[str, Any]:
    """``waiters`` clients wait on ``turns`` turns, until the turns end or ``deadline`` seconds.

    ``ready`` (a callable) is called once every client has sent its first wait request.
    """
    waiter = WAITERS[wait]
    turns = min(turns, waiters)
    sessions = await create_sessions(base_url, token, agent_id, turns)
    posted = await _bounded(
        base_url, token, [lambda conn, s=s: post_turn(conn, s) for s in sessions]
    )
    started = time.perf_counter()
    end = started + deadline
    tally = Tally()
    sent = 0
    all_sent = asyncio.Event()
    ends: list[float] = []  # completed_at of each completed turn a client saw, Unix time
    answers: list[float] = []  # when each of those clients had it

    class Counting(Connection):
        """Counts the clients whose first request is on its way (or failed)."""

        first = True

        def count(self) -> None:
            nonlocal sent
            if self.first:
                self.first = False
                sent += 1
                if sent == waiters:
                    all_sent.set()

        async def _send(self, *args, **kwargs) -> None:
            await super()._send(*args, **kwargs)
            self.count()

    async def client(index: int) -> None:
        conn = Counting(base_url, token, timeout=deadline + 5)
        try:
            ended = await waiter(conn, posted[index % turns], end)
        except (OSError, HTTPError, TimeoutError, asyncio.IncompleteReadError) as exc:
            tally.error(exc)
            return
        finally:
            conn.count()
            conn.close()
        status = ended.turn["status"]
        tally.requests += ended.requests
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == "completed" and (wake := ended.wake_up) is not None:
            tally.wake_ups.append(wake)
            ends.append(ended.seen_wall - wake)
            answers.append(ended.seen_wall)

    check = SelfCheck()
    await check.__aenter__()
    tasks = [asyncio.create_task(client(i)) for i in range(waiters)]
    try:
        try:
            async with asyncio.timeout(max(1.0, end - time.perf_counter())):
                await all_sent.wait()
        except TimeoutError:
            pass
        else:
            if ready is not None:
                ready(time.perf_counter() - started)
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, end + 5 - time.perf_counter()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await check.__aexit__(None, None, None)
    cancelled = await cancel_turns(base_url, token, [t["id"] for t in posted])
    return {
        "waiters": waiters,
        "turns": turns,
        "wait": wait,
        "wake_up": latency_summary(tally.wake_ups),
        # The window of the ends: the first turn's end, the last turn's, the last answer.
        "ends_window": [min(ends), max(ends), max(answers)] if ends else None,
        "statuses": tally.statuses,
        "still_waiting_at_deadline": len(pending),
        "requests_per_waiter": round(tally.requests / max(waiters, 1), 2),
        "errors": tally.errors,
        "client_process": check.figures(),
        "cancelled_at_end": cancelled,
        "turn_ids": [t["id"] for t in posted],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--agent-id", type=int, required=True, help="an agent on the slow LLM")
    parser.add_argument("--wait", choices=WAIT_MODES, default="longpoll")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="N clients looping post -> wait for a fixed time")
    load.add_argument("--clients", type=int, default=256)
    load.add_argument("--duration", type=float, default=20.0)
    load.add_argument("--warmup", type=float, help="seconds not counted (default 2 x delay)")
    load.add_argument("--delay", type=float, default=2.0, help="the agent's reply delay")
    waiting = sub.add_parser("waiting", help="W clients waiting on long turns")
    waiting.add_argument("--waiters", type=int, default=1000)
    waiting.add_argument("--turns", type=int, default=100)
    waiting.add_argument("--deadline", type=float, default=40.0, help="seconds at most")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or BENCH_TOKEN) is required")
    raise_open_files_limit()

    def emit(kind: str, payload: Any) -> None:
        if args.json:
            print(json.dumps({kind: payload}), flush=True)

    if args.command == "load":
        warmup = 2 * args.delay if args.warmup is None else args.warmup
        result = asyncio.run(
            run_load(
                args.base_url,
                args.token,
                args.agent_id,
                clients=args.clients,
                duration=args.duration,
                warmup=warmup,
                wait=args.wait,
                delay=args.delay,
            )
        )
        if not args.json:
            print(
                f"{args.clients} clients ({args.wait}): {result['turns_per_s']} turns/s"
                f" = {result['share_of_ideal']:.0%} of {result['ideal_turns_per_s']}/s;"
                f" post -> end {fmt_latency(result['latency'])};"
                f" wake-up {fmt_latency(result['wake_up'])}; errors {result['errors']}"
            )
    else:
        result = asyncio.run(
            run_waiting(
                args.base_url,
                args.token,
                args.agent_id,
                waiters=args.waiters,
                turns=args.turns,
                deadline=args.deadline,
                wait=args.wait,
                ready=lambda seconds: emit("ready", {"after_s": round(seconds, 3)}),
            )
        )
        if not args.json:
            print(
                f"{args.waiters} waiters on {result['turns']} turns: wake-up"
                f" {fmt_latency(result['wake_up'])}; {result['statuses']};"
                f" errors {result['errors']}"
            )
    emit("result", result)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
