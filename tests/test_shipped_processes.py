"""The processes as shipped, under many slow turns and many waiting clients, driven over HTTP.

On the suite's back end: with Redis, the Dockerfile's gunicorn command (gevent workers) and
docker-compose's ``celery -A worker worker -P gevent`` (both read from those files, so this test
runs what ships); with the embedded broker, ``serve.py`` (the API and the worker in one gevent
process). Every agent answers through an OpenAI-compatible server that takes SLOW_SECONDS per
call, as a real LLM takes seconds.
"""

from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from scripts import shipped
from tests.conftest import BROKER_URL
from tests.fake_llm import FakeLLM, RecordedRequest, text_reply, tool_call_reply
from tests.processes import free_port, start, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROVIDER, MODEL = "slow", "slow-model"
SLOW_SECONDS = 1.0
TURNS = 50
WAITING_CLIENTS = 256
LEASE_SECONDS = 2
PRODUCTION_SHAPE = BROKER_URL.startswith(("redis://", "rediss://"))


def shipped_api_command(port: int) -> list[str]:
    """The Dockerfile's CMD, listening on 127.0.0.1:port, with this environment's gunicorn."""
    return shipped.api_command("127.0.0.1", port)


def shipped_worker_command() -> list[str]:
    """docker-compose's worker command, with this environment's celery."""
    return shipped.local(shipped.service_command("worker"))


def test_shipped_commands_are_gevent():
    api, worker = shipped_api_command(8000), shipped_worker_command()
    assert api[api.index("--worker-class") + 1] == "gevent"
    assert worker[worker.index("-P") + 1] == "gevent"
    assert int(worker[worker.index("--concurrency") + 1]) >= 100


# -- the slow LLM --------------------------------------------------------------------------------


def _answer(request: RecordedRequest):
    """As a slow LLM would: a supervisor picks the first member, then ends; "use search" asks
    for a search first; "slow" takes four times longer; anything else gets a reply."""
    system = request.system_prompt
    user = [m.get("content") or "" for m in request.messages if m["role"] == "user"]
    last = user[-1] if user else ""
    if system.startswith("You coordinate"):
        members = re.findall(r"^- (\S+)$", system, re.MULTILINE)
        pick = members[0] if "nobody yet" in system else "DONE"
        return text_reply(pick, delay=SLOW_SECONDS)
    if "use search" in last and not any(m["role"] == "tool" for m in request.messages):
        return tool_call_reply("search", {"query": "budget"}, delay=SLOW_SECONDS)
    delay = 4 * SLOW_SECONDS if "slow" in last else SLOW_SECONDS
    return text_reply(f"An answer to: {last[-60:]}", delay=delay)


# -- the processes -------------------------------------------------------------------------------


class Stack:
    def __init__(self, base_url: str, logs: list[Path]) -> None:
        self.base_url = base_url
        self.logs = logs
        self.http = httpx.Client(
            base_url=base_url,
            timeout=60,
            trust_env=False,
            limits=httpx.Limits(max_connections=WAITING_CLIENTS + 64),
        )
        self.headers: dict[str, str] = {}

    def call(self, method: str, path: str, expected: int = 200, **kwargs) -> dict:
        try:
            response = self.http.request(method, path, headers=self.headers, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # A kept-alive connection the server closed as this request went out (gunicorn
            # closes idle ones after 2 s; httpcore, closing it under another thread of this
            # client, can report EBADF): a GET is safe to send again on a new one.
            if method != "GET":
                raise
            response = self.http.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code == expected, (method, path, response.text[:500])
        return response.json() if response.content else {}

    def agent(self, name: str, **fields) -> int:
        body = {"name": name, "provider": PROVIDER, "model": MODEL, **fields}
        return self.call("POST", "/api/v1/agents", 201, json=body)["id"]

    def session(self, *, agent: int | None = None, room: int | None = None) -> int:
        scope = f"/api/v1/agents/{agent}" if agent else f"/api/v1/rooms/{room}"
        return self.call("POST", f"{scope}/sessions", 201, json={})["id"]

    def room(self, mode: str, members: list[int], **orchestration) -> int:
        body = {"name": f"{mode} room", "orchestration": {"mode": mode, **orchestration}}
        room = self.call("POST", "/api/v1/rooms", 201, json=body)["id"]
        for agent in members:
            self.call("POST", f"/api/v1/rooms/{room}/agents", 201, json={"agent_id": agent})
        return room

    def post_turn(self, session: int, content: str) -> int:
        body = {"content": content}
        return self.call("POST", f"/api/v1/sessions/{session}/turns", 202, json=body)["id"]

    def wait(self, turn: int) -> dict:
        """Long-poll the turn to its end."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            params = {"wait": 30, "until": "terminal"}
            view = self.call("GET", f"/api/v1/turns/{turn}", params=params)
            if view["status"] in ("completed", "failed", "cancelled"):
                return view
        raise AssertionError(f"turn {turn} did not end")

    def running(self, turn: int) -> None:
        deadline = time.monotonic() + 30
        while self.call("GET", f"/api/v1/turns/{turn}")["status"] != "running":
            assert time.monotonic() < deadline, f"turn {turn} did not start"
            time.sleep(0.05)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs)


@pytest.fixture(scope="module")
def in_process_worker_paused(request, migrated):
    """With Redis, the suite's in-process worker consumes the same queues: it stops consuming
    while this module runs, so that the shipped worker runs every turn here."""
    if not PRODUCTION_SHAPE:
        yield
        return
    consumer = request.getfixturevalue("celery_worker").consumer
    queues = [queue.name for queue in consumer.task_consumer.queues]
    for name in queues:
        consumer.cancel_task_queue(name)
    yield
    for name in queues:
        consumer.add_task_queue(name)


@pytest.fixture(scope="module")
def stack(migrated, in_process_worker_paused, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    llm = FakeLLM().start()
    llm.respond_with(_answer)
    providers = folder / "providers.toml"
    providers.write_text(
        f'[providers.{PROVIDER}]\ntype = "openai"\nbase_url = "{llm.base_url}"\n'
        f'default_model = "{MODEL}"\ntimeout = 30\nmax_retries = 0\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ROOMCAST_PROVIDERS_FILE": str(providers),
        "ROOMCAST_SECRET_KEY": "shipped-processes-test-key",
        "ROOMCAST_LOG_LEVEL": "INFO",
        # Shorter than a slow call: the worker's renewals must keep the turn its own.
        "ROOMCAST_TURN_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    port = free_port()
    if PRODUCTION_SHAPE:
        logs = [folder / "gunicorn.log", folder / "worker.log"]
        processes = [
            start(shipped_api_command(port), logs[0], env),
            start(shipped_worker_command(), logs[1], env),
        ]
    else:
        logs = [folder / "serve.log"]
        argv = [sys.executable, "serve.py", "--port", str(port)]
        processes = [start(argv, logs[0], env)]
    try:
        stack = Stack(f"http://127.0.0.1:{port}", logs)
        wait_for(
            lambda: stack.http.get("/api/v1/health").status_code == 200, "API", processes, logs
        )
        ready = " ready." if PRODUCTION_SHAPE else "embedded Celery worker started"
        wait_for(lambda: ready in logs[-1].read_text(), "worker", processes, logs)
        email = f"shipped-{port}-{time.time_ns()}@example.com"
        credentials = {"email": email, "password": "a long password"}
        stack.call("POST", "/api/v1/auth/register", 201, json=credentials)
        token = stack.call("POST", "/api/v1/auth/tokens", 201, json=credentials)["token"]
        stack.headers = {"Authorization": f"Bearer {token}"}
        yield stack
    finally:
        for process in processes:
            stop(process)
        llm.stop()


def _at(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_drivers_cooperate_with_gevent(stack):
    logs = stack.log_text()
    # psycopg picked a wait function that yields to other greenlets (models/cooperative.py),
    # in the API process(es) and in the worker.
    assert "gevent-patched API process; psycopg waits with wait_poll" in logs
    assert "worker gevent-patched; psycopg waits with wait_poll" in logs


@pytest.mark.skipif(PRODUCTION_SHAPE, reason="beat runs maintenance in the production shape")
def test_embedded_mode_sweeps_its_outbox(stack, settings):
    from types import SimpleNamespace

    from tests.helpers import accept_undispatched

    session = stack.session(agent=stack.agent("swept"))
    # Accepted through an API whose broker is down: queued, never sent. serve.py's own sweep
    # (there is no beat in this mode) must send it to its worker.
    turn = accept_undispatched(settings, SimpleNamespace(headers=stack.headers), session, "hi")
    assert stack.wait(turn)["status"] == "completed"
    assert (
        "embedded maintenance (outbox sweep, reaper, webhook sweep) every second"
        in stack.log_text()
    )


def test_slow_turns_run_at_once(stack):
    agent = stack.agent("patient")
    sessions = [stack.session(agent=agent) for _ in range(TURNS)]

    def one(index: int) -> dict:
        return stack.wait(stack.post_turn(sessions[index], f"question {index}"))

    with ThreadPoolExecutor(TURNS) as pool:
        turns = list(pool.map(one, range(TURNS)))

    assert {t["status"] for t in turns} == {"completed"}
    intervals = [(_at(t["started_at"]), _at(t["completed_at"])) for t in turns]
    assert min(end - start for start, end in intervals) >= SLOW_SECONDS * 0.9
    # One after the other they would take TURNS seconds; together, little more than one.
    assert most_at_once(intervals) >= TURNS * 0.8


def test_waiting_clients_hold_no_thread_while_the_lease_is_renewed(stack, engine):
    agent = stack.agent("slowpoke")
    turn = stack.post_turn(stack.session(agent=agent), "a slow question")
    stack.running(turn)
    lease = text("SELECT lease_expires_at FROM turns WHERE id = :id")
    with engine.connect() as conn:
        first_lease = conn.scalar(lease, {"id": turn})

    with ThreadPoolExecutor(WAITING_CLIENTS) as pool:
        waiting = [pool.submit(stack.wait, turn) for _ in range(WAITING_CLIENTS)]
        time.sleep(0.5)  # the long-polls are in
        # Each waiting client would hold one of gunicorn gthread's 16 threads: a plain GET
        # would queue behind them until the turn ends. Here it is answered meanwhile.
        assert stack.call("GET", "/api/v1/agents")["data"]
        assert stack.call("GET", f"/api/v1/turns/{turn}")["status"] == "running"
        assert not any(f.done() for f in waiting)
        # The lease renewer (a greenlet of the worker) renews during the LLM call.
        time.sleep(LEASE_SECONDS * 0.6)
        with engine.connect() as conn:
            assert conn.scalar(lease, {"id": turn}) > first_lease
        assert stack.call("GET", f"/api/v1/turns/{turn}")["status"] == "running"
        views = [f.result() for f in waiting]
    assert {v["status"] for v in views} == {"completed"}
    assert {v["attempt"] for v in views} == {1}


def test_room_modes_tools_and_cancel_at_once(stack):
    ann, bob = stack.agent("ann"), stack.agent("bob")
    searcher = stack.agent("searcher", tools=["search"])
    rooms = {
        "sequential": stack.room("sequential", [ann, bob]),
        "round_robin": stack.room("round_robin", [ann, bob]),
        "mention": stack.room("mention", [ann, bob]),
        "supervisor": stack.room(
            "supervisor",
            [ann, bob],
            max_rounds=3,
            selector_provider=PROVIDER,
            selector_model=MODEL,
        ),
    }
    posts = {mode: (stack.session(room=room), "@bob what now?") for mode, room in rooms.items()}
    posts["tool"] = (stack.session(agent=searcher), "use search for the budget")
    turns = {mode: stack.post_turn(session, content) for mode, (session, content) in posts.items()}
    cancelled = stack.post_turn(stack.session(agent=ann), "a slow one to cancel")
    stack.running(cancelled)
    stack.call("POST", f"/api/v1/turns/{cancelled}/cancel")

    with ThreadPoolExecutor(len(turns) + 1) as pool:
        ended = dict(zip(turns, pool.map(stack.wait, turns.values()), strict=True))
        assert pool.submit(stack.wait, cancelled).result()["status"] == "cancelled"

    assert {t["status"] for t in ended.values()} == {"completed"}, ended
    speakers = {
        mode: [s["name"] for s in turn["progress"]["speakers"]] for mode, turn in ended.items()
    }
    assert speakers["sequential"] == ["ann", "bob"]
    assert speakers["round_robin"] == ["ann"]
    assert speakers["mention"] == ["bob"]
    assert speakers["supervisor"] == ["ann"]
    assert ended["supervisor"]["stop_reason"] == "selector_done"
    tool_session = posts["tool"][0]
    history = stack.call("GET", f"/api/v1/sessions/{tool_session}/messages")["data"]
    results = [m for m in history if m["role"] == "tool"]
    assert [r["metadata"]["status"] for r in results] == ["ok"]
    assert ended["tool"]["progress"]["speakers"][0]["tool_rounds"] == 1
