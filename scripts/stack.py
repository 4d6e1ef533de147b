"""``make stack`` / ``make stack-stop``: docker-compose.yml's processes without Docker, on this
machine's PostgreSQL and Redis.

    python -m scripts.stack start     # migrate, then the API, a worker, beat (and Flower)
    python -m scripts.stack status
    python -m scripts.stack stop      # warm: SIGTERM, wait, then SIGKILL

The commands are read from the Dockerfile (the API) and docker-compose.yml (migrate, worker,
beat, Flower; scripts/shipped.py), so they are the ones that ship. Like compose, ``start`` runs
the migration to its end first and starts nothing if it fails; Flower starts only with
FLOWER_BASIC_AUTH (user:password) set. Every process has a pid file and a log under STACK_DIR
(var/stack), and a process group of its own: stopping it stops what it forked.

The environment is the caller's, as in compose: DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL
(Redis) are required, any ROOMCAST_* setting is passed on; ROOMCAST_SECRET_KEY, unless set, is
one kept in STACK_DIR/secret_key, so that restarts keep the list cursors valid. HOST and PORT
(127.0.0.1:8000) place the API, FLOWER_PORT (5555) Flower.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.shipped import ROOT, api_command, local, service_command

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# In the order they start; stopped all at once.
PROCESSES = ("api", "worker", "beat", "flower")
START_TIMEOUT = 90.0
# A warm shutdown waits for the turns a worker runs; past this, SIGKILL (their leases run out
# and other workers take them over).
STOP_TIMEOUT = 60.0


class StackError(Exception):
    pass


@dataclass(frozen=True)
class Stack:
    folder: Path
    host: str
    port: int
    flower_port: int

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Stack:
        ports = {}
        for name, default in (("PORT", 8000), ("FLOWER_PORT", 5555)):
            raw = env.get(name) or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name} must be a port number, got {raw!r}")
            ports[name] = int(raw)
        return cls(
            folder=Path(env.get("STACK_DIR") or ROOT / "var" / "stack").absolute(),
            host=env.get("HOST") or "127.0.0.1",
            port=ports["PORT"],
            flower_port=ports["FLOWER_PORT"],
        )

    def pid_file(self, name: str) -> Path:
        return self.folder / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def flower_url(self) -> str:
        return f"http://{self.host}:{self.flower_port}"

    def commands(self, flower: bool) -> dict[str, list[str]]:
        """What each process runs: the shipped commands, placed on this machine."""
        beat = local(service_command("beat"))
        beat[beat.index("--schedule") + 1] = str(self.folder / "celerybeat-schedule")
        commands = {
            "api": api_command(self.host, self.port),
            "worker": local(service_command("worker")),
            "beat": beat,
        }
        if flower:
            argv = [a for a in local(service_command("flower")) if not a.startswith("--port")]
            commands["flower"] = [*argv, f"--address={self.host}", f"--port={self.flower_port}"]
        return commands


def environment(stack: Stack, env: dict[str, str]) -> dict[str, str]:
    """The caller's environment, checked, with what compose's shared block would give."""
    database_url = env.get("DATABASE_URL", "")
    broker_url = env.get("CELERY_BROKER_URL", "")
    if not database_url.startswith("postgresql"):
        raise StackError(
            "set DATABASE_URL to a PostgreSQL database,"
            " e.g. postgresql+psycopg://postgres@127.0.0.1:5432/roomcast"
        )
    if not broker_url.startswith(("redis://", "rediss://")):
        raise StackError("set CELERY_BROKER_URL to Redis, e.g. redis://127.0.0.1:6379/0")
    env = {k: v for k, v in env.items() if k != MULTIPROC_DIR}  # the API's own, below
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if not env.get("ROOMCAST_SECRET_KEY"):
        key_file = stack.folder / "secret_key"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_hex(32))
        env["ROOMCAST_SECRET_KEY"] = key_file.read_text().strip()
    return env


# -- processes ------------------------------------------------------------------------------------


def _pid(stack: Stack, name: str) -> int | None:
    try:
        return int(stack.pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies waiting to be reaped are not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command's closing parenthesis: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def running(stack: Stack) -> dict[str, int]:
    """The processes of the stack that run, by name."""
    found = {}
    for name in PROCESSES:
        pid = _pid(stack, name)
        if pid is not None and group_alive(pid):
            found[name] = pid
    return found


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(stack: Stack, checks: dict[str, Callable[[], bool]], pids: dict[str, int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = dict(checks)
    while pending:
        for name, pid in pids.items():
            if not group_alive(pid):
                raise StackError(
                    f"{name} exited; its log ({stack.log(name)}):\n{_tail(stack.log(name))}"
                )
        pending = {name: check for name, check in pending.items() if not check()}
        if time.monotonic() > deadline:
            names = ", ".join(pending)
            logs = "\n".join(f"== {n}\n{_tail(stack.log(n))}" for n in pending)
            raise StackError(f"not ready within {START_TIMEOUT:.0f} s: {names}\n{logs}")
        time.sleep(0.2)


def start(stack: Stack, env: dict[str, str]) -> None:
    if up := running(stack):
        raise StackError(f"already running ({', '.join(up)}): `make stack-stop` first")
    stack.folder.mkdir(parents=True, exist_ok=True)
    env = environment(stack, env)
    flower = bool(env.get("FLOWER_BASIC_AUTH"))
    commands = stack.commands(flower)

    with stack.log("migrate").open("w") as log:
        migrate = subprocess.run(
            local(service_command("migrate")), cwd=ROOT, env=env, stdout=log, stderr=log
        )
    if migrate.returncode != 0:
        raise StackError(f"migration failed:\n{_tail(stack.log('migrate'))}")

    pids: dict[str, int] = {}
    try:
        for name, argv in commands.items():
            own = {**env, MULTIPROC_DIR: str(stack.folder / "metrics")} if name == "api" else env
            with stack.log(name).open("w") as log:
                process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=own,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a process group of its own, and no terminal
                )
            pids[name] = process.pid
            stack.pid_file(name).write_text(f"{process.pid}\n")
        node = f"celery@{socket.gethostname()}"
        checks = {
            "api": lambda: _http_ok(f"{stack.api_url}/api/v1/health/ready"),
            "worker": lambda: f"{node} ready." in _tail(stack.log("worker"), 100_000),
            "beat": lambda: "beat: Starting..." in _tail(stack.log("beat"), 100_000),
        }
        if flower:
            checks["flower"] = lambda: _http_ok(f"{stack.flower_url}/healthcheck")
        _wait(stack, checks, pids)
    except BaseException:
        stop(stack, timeout=10)
        raise
    print(f"API     {stack.api_url}  (ready: {stack.api_url}/api/v1/health/ready)")
    print(
        f"Flower  {stack.flower_url}"
        if flower
        else "Flower  not started: set FLOWER_BASIC_AUTH=user:password"
    )
    print(f"logs and pid files in {stack.folder}; stop with `make stack-stop`")


def stop(stack: Stack, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Warm shutdown: SIGTERM to each process (gunicorn and Celery stop their own children),
    then SIGKILL to whatever of their groups is left after ``timeout``; returns the killed."""
    pids = running(stack)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(group_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = [name for name, pid in pids.items() if group_alive(pid)]
    for name in killed:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pids[name], signal.SIGKILL)
    for name in PROCESSES:
        stack.pid_file(name).unlink(missing_ok=True)
    return killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument(
        "--timeout", type=float, default=STOP_TIMEOUT, help="stop: seconds before SIGKILL"
    )
    args = parser.parse_args(argv)
    try:
        stack = Stack.from_env(dict(os.environ))
        if args.action == "start":
            start(stack, dict(os.environ))
        elif args.action == "stop":
            killed = stop(stack, args.timeout)
            if killed:
                print(f"killed after {args.timeout:g} s: {', '.join(killed)}")
            print("stopped")
        else:
            up = running(stack)
            for name in PROCESSES:
                print(f"{name:8}{f'running (pid {up[name]})' if name in up else 'stopped'}")
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
