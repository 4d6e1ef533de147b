"""The benchmark scripts import and parse their arguments (they are run by `make bench`, never
by the test suite)."""

import os
import types

import pytest

from bench import celery_baseline, history, load, polling, run, turns
from bench.client import latency_summary, percentile

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8100/api/v1/turns/3
  2 threads and 8 connections
  Latency Distribution
     50%  820.00us
     75%    1.10ms
     90%    1.52ms
     99%    3.01ms
  12345 requests in 5.00s, 9.1MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   2469.00
Transfer/sec:      1.82MB
"""


@pytest.mark.parametrize("module", [turns, polling, history, celery_baseline, run])
def test_scripts_answer_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_run_defaults_cover_the_issue():
    args = run.parse_args([])
    assert args.mode == "both"
    assert args.clients == [8, 32]
    assert args.connections == [8, 64]
    assert args.sizes == [10, 10_000, 1_000_000]


def test_wrk_output_is_parsed():
    result = load.parse_wrk(WRK_OUTPUT)
    assert result["requests_per_s"] == 2469.0
    assert result["requests"] == 12345
    assert result["errors"] == 3
    assert result["latency"] == {"p50_ms": 0.82, "p90_ms": 1.52, "p99_ms": 3.01}


def test_percentiles():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    summary = latency_summary([0.001] * 99 + [0.1])
    assert summary["n"] == 100
    assert summary["p50_ms"] == 1.0
    assert summary["max_ms"] == 100.0


def test_targets_are_ratios_to_the_same_run():
    args = run.parse_args(["--connections", "8"])
    rps = {"requests_per_s": 600.0}
    results = {
        "baseline": {"write_round_trip": {"p50_ms": 2.0}, "write_tasks_per_s": 500.0},
        "latency": {run.LONG_POLL: {"latency": {"p50_ms": 5.0}}},
        "throughput": {8: {"turns_per_s": 90.0}},
        "polling": {"pk": {8: {"requests_per_s": 1000.0}}, "200": {8: rps}, "304": {8: rps}},
        "history": {
            10: {"first": {"p50_ms": 2.0, "p99_ms": 3.0}},
            1_000_000: {"first": {"p50_ms": 3.5, "p99_ms": 12.0}},
        },
    }
    met = run.check_targets(results, args)["met"]
    # 5 ms <= 3 x 2 ms; 90/s < 20% of 500/s; 600 >= 60% of 1000; p99 12 ms and 1.75x miss.
    assert met == {"latency": True, "throughput": False, "polling": True, "history": False}
    assert run.check_targets({"baseline": results["baseline"]}, args)["met"] == {}
    # Measured between the latency rounds, the round trip is the latency's yardstick: 5 > 3 x 1.
    results["latency"][run.LONG_POLL]["baseline_write_round_trip"] = {"p50_ms": 1.0}
    assert run.check_targets(results, args)["met"]["latency"] is False


def test_latency_rounds_each_start_with_the_yardstick(monkeypatch):
    calls = []
    monkeypatch.setattr(turns, "Client", lambda *args: types.SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(turns, "create_session", lambda client, agent_id: 1)
    monkeypatch.setattr(
        turns, "run_turn", lambda *args, **kwargs: calls.append("turn") or (0.01, "completed", 1)
    )
    result = turns.measure_latency(
        "http://x",
        "t",
        1,
        turns=7,
        poll="longpoll",
        warmup=0,
        rounds=3,
        before_round=lambda: calls.append("yardstick"),
    )
    assert calls == ["yardstick", *["turn"] * 3, "yardstick", *["turn"] * 3, "yardstick", "turn"]
    assert result["latency"]["n"] == 7 and result["failed"] == 0


def test_the_benchmark_database_is_created_when_missing(settings):
    from sqlalchemy import text

    from models.db import make_engine, normalize_url

    if not settings.database_url.startswith("postgresql"):
        pytest.skip("creates a PostgreSQL database")
    url = normalize_url(settings.database_url).set(database="roomcast_bench_check")
    server = make_engine(url.set(database="postgres").render_as_string(False), pool_size=1)
    drop = text("DROP DATABASE IF EXISTS roomcast_bench_check")
    try:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
        for _ in range(2):  # creates it, then finds it
            run.ensure_postgres_database(url.render_as_string(False))
        created = make_engine(url.render_as_string(False), pool_size=1)
        with created.connect() as conn:
            assert conn.scalar(text("SELECT current_database()")) == "roomcast_bench_check"
        created.dispose()
    finally:
        with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(drop)
        server.dispose()


# -- the slow LLM scenarios: the server, the asyncio clients, the wiring (no timings) -----------

import asyncio  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from bench import slow_llm, slow_scenarios, slow_turns  # noqa: E402
from bench.aioclient import SSEParser  # noqa: E402
from bench.client import Client  # noqa: E402


@pytest.mark.parametrize("module", [slow_llm, slow_turns])
def test_slow_scripts_answer_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.fixture
def slow_server():
    """bench/slow_llm.py on a free port, in a thread of its own; its base URL."""
    port: concurrent.futures.Future = concurrent.futures.Future()
    stop = threading.Event()

    async def serve() -> None:
        server = asyncio.create_task(slow_llm.serve("127.0.0.1", 0, delay=0.05, started=port))
        while not stop.is_set():
            await asyncio.sleep(0.02)
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port.result(timeout=10)}"
    stop.set()
    thread.join(5)


def test_slow_llm_answers_the_openai_client(slow_server):
    import openai

    client = openai.OpenAI(base_url=f"{slow_server}/v1", api_key="any", max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    completion = client.chat.completions.create(model="delay-0.01", messages=messages)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == slow_llm.REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == slow_llm.REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    stats = Client(slow_server).get("/stats").json()
    assert stats["served"] == 2 and stats["in_flight"] == 0 and stats["peak_in_flight"] == 1


def test_slow_llm_is_a_provider_of_the_catalog(slow_server, tmp_path, monkeypatch):
    from models.providers import load_catalog
    from worker.providers.base import ChatMessage
    from worker.providers.openai_compat import OpenAICompatProvider

    path = tmp_path / "providers.toml"
    path.write_text(slow_llm.catalog_toml(f"{slow_server}/v1"))
    config = load_catalog(str(path))["slow"]
    monkeypatch.setenv(config.api_key_env, "bench")
    completion = OpenAICompatProvider(config).complete(
        [ChatMessage(role="user", content="hi")], model="delay-0.01"
    )
    assert completion.content == slow_llm.REPLY
    assert completion.usage.completion_tokens > 0 and not completion.usage.estimated


def test_delay_from_the_model_name():
    assert slow_llm.delay_for("delay-20", 2.0) == 20.0
    assert slow_llm.delay_for("slow-delay-0.5s", 2.0) == 0.5
    assert slow_llm.delay_for("gpt-4o-mini", 2.0) == 2.0
    drawn = {slow_llm.delay_for("delay-20-30", 2.0) for _ in range(50)}
    assert all(20.0 <= d <= 30.0 for d in drawn) and len(drawn) > 40


def test_sse_parser_reads_events_split_anywhere():
    stream = (
        b': keep-alive\r\n\r\nevent: status\r\ndata: {"status": "running"}\r\n\r\n'
        b"id: 3\nevent: delta\ndata: line one\ndata: line two\n\n"
        b"data: no name\n\nevent: end\ndata: {}\n\n"
    )
    for size in (1, 7, len(stream)):
        parser = SSEParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        assert events == [
            ("status", '{"status": "running"}'),
            ("delta", "line one\nline two"),
            ("message", "no name"),
            ("end", "{}"),
        ]


class StubAPI:
    """Just enough of Roomcast's API for the slow clients: sessions, turns that end after a
    delay, their long-poll (answering `running` once before the end) and their event stream
    (chunked, or to the connection's close)."""

    def __init__(self, delay: float = 0.05, sse_close: bool = False, streams: bool = True):
        self.delay = delay
        self.sse_close = sse_close
        self.streams = streams
        self.turns: dict[int, dict] = {}
        self.ends: dict[int, float] = {}
        self.cancelled: list[int] = []
        self.requests: list[str] = []

    def turn(self, turn_id: int) -> dict:
        turn = self.turns[turn_id]
        loop = asyncio.get_running_loop()
        if turn["status"] == "queued" and loop.time() >= self.ends[turn_id]:
            done = datetime.now(UTC).isoformat()
            turn.update(status="completed", completed_at=done)
        return turn

    async def handle(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head.decode().split("\r\n")
                method, path, _ = line.split(" ")
                self.requests.append(f"{method} {path}")
                length = [
                    int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length")
                ]
                if length and length[0]:
                    await reader.readexactly(length[0])
                if not await self.answer(method, path, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, writer) -> bool:
        def send(status: int, payload) -> bool:
            body = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return True

        parts = path.split("?")[0].strip("/").split("/")
        loop = asyncio.get_running_loop()
        if method == "POST" and parts[-1] == "sessions":
            return send(201, {"id": len(self.requests), "scope": "agent", "agent_id": 1})
        if method == "POST" and parts[-1] == "turns":
            turn_id = len(self.turns) + 1
            self.turns[turn_id] = {"id": turn_id, "status": "queued", "completed_at": None}
            self.ends[turn_id] = loop.time() + self.delay
            return send(202, self.turns[turn_id])
        if method == "POST" and parts[-1] == "cancel":
            turn = self.turn(int(parts[-2]))
            if turn["status"] != "queued":
                return send(409, {"code": "turn_finished"})
            turn["status"] = "cancelled"
            self.cancelled.append(turn["id"])
            return send(200, turn)
        if method == "GET" and parts[-1] == "events" and self.streams:
            turn_id = int(parts[-2])
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                + (
                    b"Connection: close\r\n\r\n"
                    if self.sse_close
                    else b"Transfer-Encoding: chunked\r\n\r\n"
                )
            )

            def event(name: str, data) -> None:
                raw = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                writer.write(raw if self.sse_close else b"%x\r\n%s\r\n" % (len(raw), raw))

            event("status", {"status": "running"})
            await asyncio.sleep(max(0.0, self.ends[turn_id] - loop.time()))
            event("delta", {"content": "hel"})
            event("end", self.turn(turn_id))
            if self.sse_close:
                return False
            writer.write(b"0\r\n\r\n")
            return True
        if method == "GET" and parts[-2] == "turns":
            turn_id = int(parts[-1])
            turn = self.turn(turn_id)
            # The first wait on a turn runs out early; the next ones last until its end.
            waited = "wait=" in path and self.requests.count(f"{method} {path}") > 1
            if turn["status"] == "queued" and waited:
                await asyncio.sleep(max(0.0, self.ends[turn_id] - loop.time()))
                turn = self.turn(turn_id)
            return send(200, turn)
        return send(404, {"message": "no such route"})


@contextlib.asynccontextmanager
async def stub_api(**options):
    stub = StubAPI(**options)
    server = await asyncio.start_server(stub.handle, "127.0.0.1", 0)
    stub.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield stub


@pytest.mark.parametrize(
    ("wait", "sse_close"),
    [("longpoll", False), ("sse", False), ("sse", True), ("sse-tokens", False)],
)
def test_slow_clients_loop_post_and_wait(wait, sse_close):
    async def scenario():
        async with stub_api(sse_close=sse_close) as stub:
            result = await slow_turns.run_load(
                stub.url, "t", 1, clients=3, duration=0.6, warmup=0.1, wait=wait, delay=0.05
            )
            return stub, result

    stub, result = asyncio.run(scenario())
    assert result["errors"] == {}
    assert result["statuses"]["completed"] >= 3
    assert result["latency"]["n"] == result["wake_up"]["n"] == result["statuses"]["completed"]
    assert result["ideal_turns_per_s"] == 60.0
    assert result["client_process"]["loop_lag"]["n"] > 0
    # Every turn still open at the end of the window was cancelled.
    assert result["cancelled_at_end"] == len(stub.cancelled) <= result["open_at_end"]
    if wait == "longpoll":
        assert result["requests_per_turn"] >= 1
        assert any("wait=30&until=terminal" in r for r in stub.requests)
    else:
        tokens = wait == "sse-tokens"
        assert any(
            r.endswith("/events?tokens=true" if tokens else "/events") for r in stub.requests
        )
        assert result["deltas_per_turn"] == 1.0  # the stub's one per stream


def test_waiting_clients_hear_their_turns_end():
    ready = []

    async def scenario():
        async with stub_api(delay=0.3) as stub:
            result = await slow_turns.run_waiting(
                stub.url, "t", 1, waiters=20, turns=4, deadline=5, ready=ready.append
            )
            return stub, result

    stub, result = asyncio.run(scenario())
    assert len(ready) == 1
    assert result["statuses"] == {"completed": 20} and result["errors"] == {}
    assert result["wake_up"]["n"] == 20 and result["still_waiting_at_deadline"] == 0
    assert len([r for r in stub.requests if r.startswith("POST") and r.endswith("/turns")]) == 4
    assert result["cancelled_at_end"] == 0  # all over by then


@pytest.mark.parametrize("streams", [True, False])
def test_the_sse_check_says_why_when_the_api_has_no_streams(monkeypatch, streams):
    monkeypatch.setattr(slow_scenarios.polling, "finished_turn", lambda *args: (1, "etag"))

    async def check():
        async with stub_api(streams=streams) as stub:
            stub.turns[1] = {"id": 1, "status": "completed", "completed_at": None}
            stub.ends[1] = 0.0
            ctx = types.SimpleNamespace(
                mode=types.SimpleNamespace(api_url=stub.url), token="t", agent_id=1
            )
            # It runs a loop of its own: in a thread, while this one serves.
            return await asyncio.to_thread(slow_scenarios.sse_unavailable, ctx)

    reason = asyncio.run(check())
    assert reason == (None if streams else "GET /api/v1/turns/{id}/events answered 404")


def test_slow_scenarios_are_selectable_and_their_targets_checked():
    args = run.parse_args(
        ["--mode", "production", "--only", "slow_longpoll", "slow_sse", "waiting_probe"]
        + ["waiting_spread"]
    )
    assert args.only == ["slow_longpoll", "slow_sse", "waiting_probe", "waiting_spread"]
    assert args.waiting_spread == 10.0
    assert args.slow_clients == [256] and args.slow_delay == 2.0 and args.waiters == 1000
    base = {"baseline": {"write_round_trip": {"p50_ms": 2.0}, "write_tasks_per_s": 500.0}}

    def load(share: float, p99_ms: float, mode: str) -> dict:
        figures = {
            "share_of_ideal": share,
            "turns_per_s": share * 128,
            "ideal_turns_per_s": 128.0,
            "latency": {"p99_ms": p99_ms},
        }
        return {"mode": mode, "delay_s": 2.0, 256: figures}

    results = base | {
        "slow_longpoll": load(0.9, 2500.0, "production"),
        "slow_sse": load(0.9, 3500.0, "production"),
        "waiting_probe": {
            "mode": "production",
            "waiters": 1000,
            "turns": 100,
            "probe": {"p99_ms": 20.0},
            "clients": {"wake_up": {"p99_ms": 150.0}},
        },
        "waiting_spread": {
            "mode": "production",
            "waiters": 1000,
            "turns": 100,
            "spread_s": 10.0,
            "clients": {"wake_up": {"p99_ms": 60.0}},
        },
    }
    checked = run.check_targets(results, args)
    assert checked["met"] == {
        "slow_longpoll": True,
        "slow_sse": False,
        "waiting_probe": False,
        "waiting_spread": True,
    }
    assert any("ending at once" in line for line in checked["lines"])
    assert any("ending over 10 s" in line for line in checked["lines"])
    # Embedded: 70% of the ideal, the p99 for information only.
    results = base | {
        "slow_longpoll": load(0.75, 3500.0, "embedded"),
        "slow_sse": {"mode": "embedded", "skipped": "404"},
    }
    checked = run.check_targets(results, args)
    assert checked["met"] == {"slow_longpoll": True}
    assert any("skipped" in line for line in checked["lines"])


def test_turns_left_open_are_cancelled_in_the_database(held_client, user, make_agent, settings):
    agent = make_agent(user)
    session = held_client.post(f"/api/v1/agents/{agent.id}/sessions", json={}, headers=user.headers)
    turn = held_client.post(
        f"/api/v1/sessions/{session.json['id']}/turns", json={"content": "hi"}, headers=user.headers
    )
    assert turn.status_code == 202 and turn.json["status"] == "queued"
    env = {"DATABASE_URL": settings.database_url, "CELERY_BROKER_URL": settings.broker_url}
    assert slow_scenarios.cancel_in_database(env, [turn.json["id"], 10**9]) == 1
    seen = held_client.get(f"/api/v1/turns/{turn.json['id']}", headers=user.headers)
    assert seen.json["status"] == "cancelled" and seen.json["completed_at"]
    assert slow_scenarios.cancel_in_database(env, [turn.json["id"]]) == 0


def test_cpu_is_counted_by_role_over_a_window(monkeypatch):
    import subprocess
    import sys
    import time
    import uuid

    from bench import cpu_use

    if not cpu_use.CpuSampler.available():
        pytest.skip("reads /proc")
    # The processes of a benchmark, by role (beat and the baseline worker are none of them).
    assert cpu_use.role_of("gunicorn", "gunicorn --config gunicorn.conf.py api:create_app()")
    assert cpu_use.role_of("python", "gunicorn --config x bench.pk_app:create_app()") is None
    assert cpu_use.role_of("python", "python serve.py") == "serve.py (API and worker)"
    assert cpu_use.role_of("celery", "celery -A worker worker -Q turns --pool gevent")
    assert cpu_use.role_of("celery", "celery -A worker beat -l INFO") is None
    assert cpu_use.role_of("celery", "celery -A bench.celery_baseline worker") is None
    assert cpu_use.role_of("postgres", "postgres: 16/main: postgres bench") == "PostgreSQL"
    assert cpu_use.role_of("python", "python -m bench.slow_turns --json waiting") == "clients"
    assert cpu_use.role_of("python", "python -m bench.slow_llm --port 1 --delay 2") == "slow LLM"

    # A role of this test's own (another run of the suite may be sampling at the same time): a
    # process that spins for 0.4 s of CPU, after the sampler's next look for new processes.
    marker = f"cpu-test-{uuid.uuid4().hex}"
    monkeypatch.setattr(cpu_use, "ROLES", (("burner", lambda comm, cmd: marker in cmd),))
    burn = (
        f"import time\ntime.sleep({cpu_use.INTERVAL * cpu_use.RESCAN_EVERY + 0.3})\n"
        "end = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    )
    with cpu_use.CpuSampler() as cpu:
        time.sleep(0.1)
        before = time.time()
        subprocess.run([sys.executable, "-c", burn, marker], check=True)
        after = time.time()
        time.sleep(0.1)
    used = cpu.used(before, after + 0.05)
    assert 0.3 <= used["burner"] <= 0.6
    # The machine's busy time covers the burner's, and cannot pass what its cores allow.
    assert (
        used["burner"] - 0.1
        <= used[cpu_use.MACHINE]
        <= (os.cpu_count() or 1) * (after + 0.05 - before) + 0.1
    )
    assert cpu.used(before - 0.1, before)["burner"] == 0  # not yet started
    # A process that ended keeps its last sample; one sampled only later counts from its first.
    samples = [(10.0, 1.0), (11.0, 1.5), (12.0, 2.5)]
    assert cpu_use._at(samples, 9.0) == 1.0
    assert cpu_use._at(samples, 11.5) == 1.5
    assert cpu_use._at(samples, 99.0) == 2.5
