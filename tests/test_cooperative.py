"""models/cooperative.py: what a gevent process needs from SQLite and psycopg. Each check runs
in a fresh interpreter patched by gevent first, as the shipped processes are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Greenlet A writes, then yields inside its transaction (as on a socket or a contended lock);
# greenlet B writes meanwhile. On a plain sqlite3 connection B sleeps in SQLite's busy handler,
# in C, so A cannot run to its commit: B fails when the busy timeout runs out. On the engine of
# models.db, B waits for the process's write lock by yielding, and both commit at once.
TWO_WRITERS = """
from gevent import monkey

monkey.patch_all()

import json, sys, time

import gevent
from sqlalchemy import create_engine, text

from models.db import make_engine

path, guarded = sys.argv[1], sys.argv[2] == "guarded"
url = f"sqlite:///{path}"
engine = make_engine(url) if guarded else create_engine(url, connect_args={"timeout": 1})
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE t (x INTEGER)"))


def a():
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        gevent.sleep(0.3)


def b():
    gevent.sleep(0.05)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))


started = time.monotonic()
jobs = [gevent.spawn(a), gevent.spawn(b)]
gevent.joinall(jobs)
with engine.connect() as conn:
    rows = conn.scalar(text("SELECT count(*) FROM t"))
print(json.dumps({
    "seconds": time.monotonic() - started,
    "errors": [str(j.exception.orig) for j in jobs if j.exception],
    "rows": rows,
}))
"""

PSYCOPG_WAIT = """
import sys

if sys.argv[1] == "patched-first":
    from gevent import monkey

    monkey.patch_all()
import psycopg  # noqa: F401

if sys.argv[1] == "patched-late":
    from gevent import monkey

    monkey.patch_all()
from models.cooperative import require_cooperative_psycopg

try:
    print(require_cooperative_psycopg())
except RuntimeError as exc:
    print("refused:", exc)
"""


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_sqlite_writer_that_yields_mid_transaction_stalls_a_plain_connection(tmp_path):
    outcome = json.loads(_run(TWO_WRITERS, str(tmp_path / "plain.db"), "plain"))
    assert outcome["errors"] == ["database is locked"]
    assert outcome["seconds"] >= 1  # the whole process waited out the busy timeout


def test_sqlite_writers_take_turns_under_gevent(tmp_path):
    outcome = json.loads(_run(TWO_WRITERS, str(tmp_path / "guarded.db"), "guarded"))
    assert outcome["errors"] == []
    assert outcome["rows"] == 2
    assert outcome["seconds"] < 1  # B waited for A's commit (0.3 s), not for a timeout


def test_psycopg_cooperates_when_gevent_patches_first():
    assert _run(PSYCOPG_WAIT, "patched-first") == "wait_poll"


def test_psycopg_imported_before_gevent_is_refused():
    assert _run(PSYCOPG_WAIT, "patched-late").startswith("refused: psycopg waits with wait_c")


def test_without_gevent_psycopg_keeps_its_c_wait():
    assert _run(PSYCOPG_WAIT, "unpatched") == "wait_c"


SOCKET_PROBES = """
from gevent import monkey

monkey.patch_all()
import socket

import httpcore2._utils as utils

from models.cooperative import probe_sockets_directly

before = utils.select.poll.__module__
probe_sockets_directly()
after = utils.select.poll.__module__
a, b = socket.socketpair()
idle = utils.is_socket_readable(a)
b.send(b"x")
print(before, after, idle, utils.is_socket_readable(a))
"""


def test_httpx_pools_probe_idle_connections_with_the_os_poll_under_gevent():
    # gevent's poll went through the hub: a third of a gevent worker's CPU with 100 idle
    # connections to an LLM server. The OS's poll with timeout 0 cannot block.
    before, after, idle, readable = _run(SOCKET_PROBES).split()
    assert before.startswith("gevent") and after == "select"
    assert (idle, readable) == ("False", "True")
