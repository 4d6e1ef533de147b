"""``make stack`` as an operator runs it (``python -m scripts.stack start``, what the Makefile
calls): docker-compose.yml's processes without Docker, on a PostgreSQL database and a Redis
database of their own. A turn runs through it over HTTP, compose's healthchecks pass against
it, the API's two gunicorn workers' counts add up in one scrape, and ``stop`` leaves no process.
It refuses other back ends, and starts nothing when the migration fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scripts.stack import PROCESSES, group_alive
from tests.conftest import BROKER_URL, DATABASE_URL, is_postgres
from tests.processes import free_port, own_redis_url
from tests.test_compose import SECRET_VALUES, compose_config

needs_the_back_ends = pytest.mark.skipif(
    not (is_postgres() and BROKER_URL.startswith("redis")),
    reason="make stack runs on PostgreSQL and Redis (TEST_DATABASE_URL, TEST_BROKER_URL)",
)

ROOT = Path(__file__).resolve().parent.parent
METRICS_TOKEN = "stack-metrics-token"
FLOWER_LOGIN = "ops:stack-flower-password"
STALE_ROUTE = "/from-a-previous-run"


@dataclass
class Stack:
    env: dict[str, str]
    folder: Path
    api: str
    flower: str

    def run(self, action: str, timeout: float = 150) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "scripts.stack", action],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pids(self) -> dict[str, int]:
        return {
            name: int((self.folder / f"{name}.pid").read_text())
            for name in PROCESSES
            if (self.folder / f"{name}.pid").exists()
        }


def _fresh_database(name: str) -> str:
    """A database of the stack's own, empty: `make stack` migrates it from nothing."""
    url = make_url(DATABASE_URL)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _stale_sample(folder: Path, env: dict[str, str]) -> None:
    """A counter left in the metrics directory by an earlier run: gunicorn must empty it."""
    code = (
        "from models.metrics import HTTP_REQUESTS\n"
        f"HTTP_REQUESTS.labels('GET', {STALE_ROUTE!r}, '200').inc(7)\n"
    )
    folder.mkdir(parents=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert list(folder.glob("counter_*.db"))


def _start(env: dict[str, str], folder: Path) -> subprocess.CompletedProcess:
    return Stack({**env, "STACK_DIR": str(folder)}, folder, "", "").run("start")


@pytest.mark.parametrize(
    ("database_url", "broker_url", "refusal"),
    [
        ("sqlite:///var/x.db", "redis://127.0.0.1:6379/0", "set DATABASE_URL to a PostgreSQL"),
        ("postgresql+psycopg://u@127.0.0.1/x", "memory://", "set CELERY_BROKER_URL to Redis"),
    ],
)
def test_start_refuses_other_back_ends(database_url, broker_url, refusal, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url}
    started = _start(env, tmp_path)
    assert started.returncode == 1
    assert refusal in started.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
    bad_port = _start({**env, "PORT": "80a"}, tmp_path)
    assert (bad_port.returncode, bad_port.stderr) == (
        1,
        "stack: PORT must be a port number, got '80a'\n",
    )


@needs_the_back_ends
def test_a_failed_migration_starts_nothing(tmp_path):
    missing = make_url(DATABASE_URL).set(database="no_such_database_for_the_stack")
    env = {
        **os.environ,
        "DATABASE_URL": missing.render_as_string(hide_password=False),
        "CELERY_BROKER_URL": BROKER_URL,
    }
    started = _start(env, tmp_path)
    assert started.returncode == 1
    assert "migration failed" in started.stderr
    assert 'database "no_such_database_for_the_stack" does not exist' in started.stderr
    assert not list(tmp_path.glob("*.pid"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    database = f"{make_url(DATABASE_URL).database}_stack"
    port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": _fresh_database(database),
        "CELERY_BROKER_URL": own_redis_url(BROKER_URL),
        "STACK_DIR": str(folder),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "FLOWER_PORT": str(flower_port),
        "FLOWER_BASIC_AUTH": FLOWER_LOGIN,
        "ROOMCAST_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.pop("ROOMCAST_SECRET_KEY", None)  # the stack keeps one of its own
    _stale_sample(folder / "metrics", env)
    stack = Stack(env, folder, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{flower_port}")
    started = stack.run("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        stack.run("stop", timeout=90)
        admin = create_engine(
            make_url(DATABASE_URL).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@needs_the_back_ends
def test_a_turn_runs_through_the_stack(stack):
    with httpx.Client(base_url=f"{stack.api}/api/v1", timeout=30, trust_env=False) as http:
        credentials = {"email": f"stack-{time.time_ns()}@example.com", "password": "a long pw!"}
        assert http.post("/auth/register", json=credentials).status_code == 201
        token = http.post("/auth/tokens", json=credentials).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        agent = http.post("/agents", json={"name": "quick", "provider": "instant"}).json()
        session = http.post(f"/agents/{agent['id']}/sessions", json={}).json()
        turn = http.post(f"/sessions/{session['id']}/turns", json={"content": "hello"}).json()
        view = http.get(f"/turns/{turn['id']}", params={"wait": 20, "until": "terminal"}).json()
        assert view["status"] == "completed", view
        history = http.get(f"/sessions/{session['id']}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    # The stack's worker ran it (it logs the turn's id), and its key signs the cursors.
    assert f'"turn_id": {turn["id"]}' in (stack.folder / "worker.log").read_text()
    assert len((stack.folder / "secret_key").read_text().strip()) == 64


def _healthcheck(stack: Stack, service: str, **replace: str) -> list[str]:
    """docker-compose.yml's healthcheck of a service, placed on the stack's ports."""
    command = compose_config(SECRET_VALUES)["services"][service]["healthcheck"]["test"]
    kind, *argv = command
    if kind == "CMD-SHELL":
        argv = ["sh", "-c", *argv]
    argv = [arg.replace(":8000/", f":{stack.env['PORT']}/") for arg in argv]
    argv = [arg.replace(":5555/", f":{stack.env['FLOWER_PORT']}/") for arg in argv]
    for old, new in replace.items():
        argv = [arg.replace(old, new) for arg in argv]
    return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def _passes(stack: Stack, argv: list[str], hostname: str) -> bool:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**stack.env, "HOSTNAME": hostname, "PATH": path}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=60).returncode == 0


@needs_the_back_ends
def test_compose_healthchecks_pass_against_the_stack(stack):
    host = socket.gethostname()  # Celery's node name is celery@ and the host's name
    for service in ("api", "worker", "flower"):
        assert _passes(stack, _healthcheck(stack, service), host), service
    # The worker's check asks this worker: one of another name fails it.
    other_worker = _healthcheck(stack, "worker", **{"--timeout 5": "--timeout 1"})
    assert not _passes(stack, other_worker, f"not-{host}")


def _health_requests(scrape: str) -> dict[str, float]:
    pattern = r'roomcast_http_requests_total\{method="GET",route="([^"]+)",status="200"\} (\S+)'
    return {route: float(count) for route, count in re.findall(pattern, scrape)}


@needs_the_back_ends
def test_the_api_workers_counts_add_up_in_one_scrape(stack):
    def scrape() -> dict[str, float]:
        # A new connection each time: --reuse-port hands it to either worker.
        response = httpx.get(
            f"{stack.api}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return _health_requests(response.text)

    before = scrape().get("/api/v1/health", 0)
    requests = 40
    for _ in range(requests):
        assert httpx.get(f"{stack.api}/api/v1/health", timeout=10).status_code == 200
    scrapes = [scrape() for _ in range(6)]
    assert {s["/api/v1/health"] for s in scrapes} == {before + requests}
    # Both workers answered some (each counts in a file of its own), and the earlier run's
    # sample was emptied out before they started.
    assert len(list((stack.folder / "metrics").glob("counter_*.db"))) >= 2
    assert not any(STALE_ROUTE in s for s in scrapes)


@needs_the_back_ends
def test_stop_is_warm_and_leaves_no_process(stack):
    status = stack.run("status")
    pids = stack.pids()
    assert set(pids) == set(PROCESSES)
    assert all(f"{name:8}running (pid {pid})" in status.stdout for name, pid in pids.items())
    again = stack.run("start")
    assert again.returncode == 1 and "already running" in again.stderr
    assert stack.pids() == pids

    stopped = stack.run("stop", timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert "killed" not in stopped.stdout  # all went on SIGTERM
    assert not [name for name, pid in pids.items() if group_alive(pid)]
    assert stack.pids() == {}
    assert "Warm shutdown" in (stack.folder / "worker.log").read_text()
    assert "stopped" in stack.run("status").stdout
