"""The built-in local model's llama.cpp server: one per host, shared by every worker process.

A gevent worker process runs hundreds of turns, and a host runs one worker process per core;
the model would load once per process, and several llama.cpp servers would fight for the same
cores (their threads spin-wait for each other). So the first process that needs the model
starts ``python -m worker.local_server`` as a process of its own, and every process of the
host (of the same user, with the same model settings) calls that one:

- Under ``runtime_dir()`` (``ROOMCAST_RUNTIME_DIR``; by default ``$XDG_RUNTIME_DIR/roomcast``,
  else ``roomcast-<uid>`` in the temporary folder; mode 0700), a server is known by a key, the
  hash of its settings: ``local-model-<key>.json`` holds its pid, address and API key (mode
  0600: only this user can borrow the server), ``local-model-<key>.lock`` is flock'd while a
  process checks the server and starts it, so that two processes never start two.
- The server listens on 127.0.0.1 at a port the OS picks, with a random API key it makes
  itself (never on a command line). Its log is ``local-model-<key>.log``.
- A caller that finds the server dead (its pid gone, or not answering) starts a new one.
- The server exits after ``IDLE_SECONDS`` without a caller (callers touch its file at every
  call), so that test runs and benchmarks leave none behind for long.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

# How long start-up may take: a fresh interpreter, the model loaded, the HTTP side answering.
START_TIMEOUT = 30.0
IDLE_SECONDS = 600.0
IDLE_CHECK_SECONDS = 10.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerSettings:
    """What the server is started with; servers with other settings are other servers."""

    model_path: str
    model_alias: str
    context_tokens: int
    max_reply_tokens: int
    temperature: float
    top_p: float
    repeat_penalty: float
    threads: int
    verbosity: int

    @property
    def key(self) -> str:
        encoded = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


@dataclass(frozen=True)
class RunningServer:
    pid: int
    address: str  # http://127.0.0.1:PORT
    api_key: str


class ServerError(Exception):
    """The server could not be started; the message says why (and where its log is)."""


def runtime_dir() -> Path:
    """This user's folder for the server's files, created private (0700) if missing."""
    configured = os.environ.get("ROOMCAST_RUNTIME_DIR")
    if configured:
        path = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "roomcast"
    else:
        path = Path(tempfile.gettempdir()) / f"roomcast-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    # In a shared temporary folder another user could have made it first: never use theirs.
    if info.st_uid != os.getuid():
        raise ServerError(f"{path} belongs to another user; set ROOMCAST_RUNTIME_DIR")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def _paths(settings: ServerSettings, folder: Path) -> tuple[Path, Path, Path]:
    stem = folder / f"local-model-{settings.key}"
    return stem.with_suffix(".json"), stem.with_suffix(".lock"), stem.with_suffix(".log")


# -- callers ---------------------------------------------------------------------------------------


def ensure_server(settings: ServerSettings) -> RunningServer:
    """The host's server for ``settings``: the running one, or one started now."""
    info_path, lock_path, log_path = _paths(settings, runtime_dir())
    running = _running(info_path)
    if running is not None:
        return running
    with _locked(lock_path):
        running = _running(info_path)  # another process started it while we waited
        if running is not None:
            return running
        return _start(settings, info_path, log_path)


# Servers this process started: a dead one stays a zombie until its parent (us) waits for it.
_children: dict[int, subprocess.Popen] = {}


def is_alive(server: RunningServer) -> bool:
    """Whether the server's process still exists (a cheap check before each call)."""
    child = _children.get(server.pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(server.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a pid reused by another user's process
        return False
    # A dead server whose parent (another worker process) has not waited for it yet is a zombie.
    try:
        state = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def touch(settings: ServerSettings) -> None:
    """Tell the server it is in use (it exits after IDLE_SECONDS without this)."""
    info_path, _, _ = _paths(settings, runtime_dir())
    with contextlib.suppress(FileNotFoundError):  # it exited: the next call starts it again
        os.utime(info_path)


def stop_servers(folder: Path) -> None:
    """Stop every server whose file is in ``folder`` (the test suite, at its end)."""
    for info_path in folder.glob("local-model-*.json"):
        running = _read(info_path)
        if running is not None and is_alive(running):
            os.kill(running.pid, signal.SIGTERM)


def _read(info_path: Path) -> RunningServer | None:
    try:
        return RunningServer(**json.loads(info_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _running(info_path: Path) -> RunningServer | None:
    running = _read(info_path)
    if running is None or not is_alive(running):
        return None
    try:
        healthy = _health(running.address, timeout=2.0) == 200
    except httpx.HTTPError:
        healthy = False
    return running if healthy else None


def _health(address: str, timeout: float) -> int:
    return httpx.get(f"{address}/health", timeout=timeout, trust_env=False).status_code


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # Not a blocking flock: in a gevent process it would stop every greenlet while another
        # process starts the server; time.sleep yields.
        deadline = time.monotonic() + START_TIMEOUT * 2
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(f"{lock_path} stayed locked by another process") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _start(settings: ServerSettings, info_path: Path, log_path: Path) -> RunningServer:
    info_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "worker.local_server", json.dumps(asdict(settings))]
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        # A session of its own: it outlives the process that started it (and its process
        # group's signals), serving the host's other processes.
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    problem = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-500:].strip()
            raise ServerError(f"it exited with {process.returncode} ({log_path}): {tail}")
        running = _read(info_path)
        if running is not None and running.pid == process.pid:
            try:
                status = _health(running.address, timeout=5.0)
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if status == 200:
                    _children[process.pid] = process
                    return running
                problem = f"HTTP {status}"
        time.sleep(0.05)
    process.kill()
    raise ServerError(f"it did not become ready in {START_TIMEOUT:g} s ({problem}; {log_path})")


# -- the server process ----------------------------------------------------------------------------


def serve(settings: ServerSettings, info_path: Path) -> None:
    """Load the model, publish the address and key, and serve until idle or told to stop."""
    import xllamacpp

    api_key = secrets.token_urlsafe(24)
    params = xllamacpp.CommonParams()
    params.model.path = settings.model_path
    params.model_alias = settings.model_alias
    params.n_ctx = settings.context_tokens
    params.n_predict = settings.max_reply_tokens
    params.sampling.temp = settings.temperature
    params.sampling.top_p = settings.top_p
    params.sampling.penalty_repeat = settings.repeat_penalty
    params.n_parallel = 1
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; listening_address tells which
    params.api_keys = [api_key]
    params.ui = False
    params.verbosity = settings.verbosity
    server = xllamacpp.Server(params)
    running = RunningServer(pid=os.getpid(), address=server.listening_address, api_key=api_key)
    # Written whole or not at all, readable by this user only (it holds the key).
    partial = info_path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(running), out)
    os.replace(partial, info_path)
    log.info("local model server %s on %s (pid %d)", settings.key, running.address, running.pid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(IDLE_CHECK_SECONDS)
        try:
            idle = time.time() - info_path.stat().st_mtime
            replaced = _read(info_path) != running
        except FileNotFoundError:
            idle, replaced = 0.0, True
        if replaced:
            log.info("another server took over; exiting")
            return
        if idle > IDLE_SECONDS:
            log.info("idle for %.0f s; exiting", idle)
            info_path.unlink(missing_ok=True)
            del server
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="ServerSettings as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = ServerSettings(**json.loads(args.settings))
    info_path, _, _ = _paths(settings, runtime_dir())
    serve(settings, info_path)


if __name__ == "__main__":
    main()
