"""Starting, watching and stopping the project's own processes (serve.py, gunicorn, Celery,
Flower) from tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_redis_url(broker_url: str) -> str:
    """A Redis database next to the suite's (``broker_url``), emptied: for tests whose own
    worker must be the only consumer of the queues (the suite's in-process worker consumes the
    suite's database). One module at a time uses it."""
    import redis

    base, _, db = broker_url.rpartition("/")
    url = f"{base}/{(int(db or 0) - 1) % 16}"
    redis.Redis.from_url(url).flushdb()
    return url


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        # A process group of its own: stopping it stops the workers it forks, and nothing else.
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def wait_for(check, what: str, processes: list[subprocess.Popen], logs: list[Path]) -> None:
    """Until check() is true; fails with the logs' tails if a process exits first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
            raise AssertionError(f"a process exited before {what}:\n{tails}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within 60 s")
