"""Starting and stopping the processes a benchmark measures (gunicorn, Celery workers, serve.py).

Each process runs in its own process group, so stopping it also stops the children it forked
(gunicorn's and Celery's pool workers), and nothing else. Every process started here is stopped
when the benchmark ends, also on Ctrl-C or an error.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOG_DIR = ROOT / "var" / "bench"

_running: list[Proc] = []


class Proc:
    """A child process with its output in ``var/bench/NAME.log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        with self.log_path.open("w") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        if self in _running:
            _running.remove(self)
        if self.popen.poll() is not None:
            return
        # The group is this child's own (start_new_session): its pid is the group id.
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        except ProcessLookupError:
            pass
        # Pool children that outlived their parent are still in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def stop_all() -> None:
    for proc in reversed(list(_running)):
        proc.stop()


def _on_signal(signum, _frame) -> None:
    stop_all()
    sys.exit(128 + signum)


def install_cleanup() -> None:
    """Stop every started process at exit and on SIGTERM (Ctrl-C raises and exits too)."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)


def wait_until(
    check: Callable[[], bool], what: str, procs: list[Proc], timeout: float = 60
) -> None:
    """Poll ``check`` until it is true; fail early if one of ``procs`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout} s (logs in {LOG_DIR})")


def gunicorn(
    name: str, target: str, port: int, env: dict[str, str], *, workers: int, connections: int
) -> Proc:
    """gunicorn as the Dockerfile runs the API: its settings file (gunicorn.conf.py: the
    metrics of every worker, start-up objects out of the collector's way), gevent workers, a
    listening socket each (--reuse-port), access log off."""
    return Proc(
        name,
        [
            str(BIN / "gunicorn"),
            "--config",
            "gunicorn.conf.py",
            "--worker-class",
            "gevent",
            "--worker-connections",
            str(connections),
            "--workers",
            str(workers),
            "--reuse-port",
            "--bind",
            f"127.0.0.1:{port}",
            target,
        ],
        env,
    )


def celery_worker(
    name: str,
    app: str,
    env: dict[str, str],
    *,
    queues: str,
    concurrency: int,
    pool: str = "gevent",
) -> Proc:
    """``celery -A APP worker``: gevent pool, as in production (docker-compose.yml)."""
    return Proc(
        name,
        [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "-Q",
            queues,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--hostname",
            f"{name}@%h",
            "-l",
            "INFO",
        ],
        env,
    )


def celery_beat(name: str, app: str, env: dict[str, str]) -> Proc:
    return Proc(
        name,
        [
            str(BIN / "celery"),
            "-A",
            app,
            "beat",
            "-l",
            "INFO",
            "--schedule",
            str(LOG_DIR / f"{name}-schedule"),
        ],
        env,
    )


def python(name: str, args: list[str], env: dict[str, str]) -> Proc:
    return Proc(name, [sys.executable, *args], env)
