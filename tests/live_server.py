"""A live server as ``make run`` starts it (serve.py: the API and, on the embedded broker, its
own Celery worker in one gevent process), for tests that talk to Roomcast over HTTP as its
clients do (the Python client, the CLI, the console page).

On the embedded broker it has a SQLite database of its own, as `make run` has. With Redis it
serves the API on the suite's database, and the suite's in-process worker runs the turns.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import migrate_to_head
from tests.processes import free_port, start, stop, wait_for

PASSWORD = "a long live password"


@dataclass
class LiveServer:
    base_url: str
    log: Path
    _users: int = field(default=0)

    def register(self, email: str | None = None) -> tuple[str, str]:
        """A new user's (email, token), through the API."""
        self._users += 1
        email = email or f"live-{self._users}-{time.time_ns()}@example.com"
        credentials = {"email": email, "password": PASSWORD}
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=30) as http:
            http.post("/api/v1/auth/register", json=credentials).raise_for_status()
            response = http.post("/api/v1/auth/tokens", json=credentials)
            response.raise_for_status()
        return email, response.json()["token"]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def live_server(request, migrated, tmp_path_factory):
    from tests.conftest import BROKER_URL

    folder = tmp_path_factory.mktemp("live")
    log = folder / "serve.log"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if BROKER_URL.startswith("memory://"):
        # Its own database and files, as `make run` has: its embedded worker and maintenance
        # (the outbox sweep, the reaper) must not take the other tests' turns.
        env["DATABASE_URL"] = f"sqlite:///{folder}/roomcast.db"
        env["ROOMCAST_FILES_DIR"] = str(folder / "files")
        migrate_to_head(env["DATABASE_URL"])
    else:
        # serve.py serves the API only; the suite's worker runs the turns.
        request.getfixturevalue("celery_worker")
    env.setdefault("ROOMCAST_SECRET_KEY", "live-server-test-key")
    process = start([sys.executable, "serve.py", "--port", str(port)], log, env)
    server = LiveServer(f"http://127.0.0.1:{port}", log)
    try:
        wait_for(
            lambda: httpx.get(f"{server.base_url}/api/v1/health", timeout=5).status_code == 200,
            "the live server",
            [process],
            [log],
        )
        yield server
    finally:
        stop(process)
