"""A database or broker outage: every request that meets it answers 503 with Retry-After in the
one error shape, nothing is half-written, and the same app serves again once the dependency is
back, without a restart.

PostgreSQL is taken away from one app only, through a TCP proxy of the test's own (the server is
shared with other tests); SQLite meets its outage as another writer holding the lock past the
busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta

import kombu.exceptions
import psycopg
import pytest
import redis
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from api import create_app
from models import Agent, ChatSession, Message, Turn, utcnow
from models import db as db_module
from models.db import is_database_unavailable, make_engine
from tests.tcp_proxy import TcpProxy

# However long the outage lasted, the app must serve again this soon after the database is back.
RECOVERY_SECONDS = 5.0


def assert_unavailable(response, code="database_unavailable"):
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert response.headers["Retry-After"].isdigit()
    body = response.json
    assert body["status"] == 503 and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]


@pytest.fixture
def postgres_url(settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a database behind a TCP proxy needs a database server (PostgreSQL)")
    return make_url(settings.database_url)


@pytest.fixture
def proxy(postgres_url):
    with TcpProxy((postgres_url.host or "127.0.0.1", postgres_url.port or 5432)) as proxy:
        yield proxy


@pytest.fixture
def proxied_app(settings, proxy, postgres_url):
    url = postgres_url.set(host=proxy.host, port=proxy.port)
    app = create_app(
        replace(settings, database_url=url.render_as_string(hide_password=False)),
        {"TESTING": True},
    )
    yield app
    app.extensions["roomcast"].engine.dispose()


@pytest.fixture
def scene(user, make_agent, db):
    """A user's agents and sessions: one session with a turn running (for a long-poll to wait
    on), one free to take turns."""
    agent, doomed = make_agent(user), make_agent(user)
    busy = ChatSession(user_id=user.id, agent_id=agent.id)
    free = ChatSession(user_id=user.id, agent_id=agent.id)
    db.add_all([busy, free])
    db.flush()
    # Running under a long lease, with no task behind it: nobody ends it while the test waits.
    now = utcnow()
    running = Turn(
        session_id=busy.id,
        user_id=user.id,
        status="running",
        attempt=1,
        started_at=now,
        dispatched_at=now,
        lease_expires_at=now + timedelta(minutes=10),
    )
    db.add(running)
    db.commit()
    yield {"agent": agent, "doomed": doomed, "session": free, "running": running}
    db.execute(Turn.__table__.update().where(Turn.id == running.id).values(status="cancelled"))
    db.commit()


def _requests(scene):
    """One request of every kind: (name, method, path, json body)."""
    agent, doomed, session = scene["agent"], scene["doomed"], scene["session"]
    return [
        ("list", "GET", "/api/v1/agents", None),
        ("get one", "GET", f"/api/v1/agents/{agent.id}", None),
        ("create", "POST", "/api/v1/agents", {"name": "made-in-the-outage", "provider": "instant"}),
        ("update", "PATCH", f"/api/v1/agents/{agent.id}", {"name": "renamed-in-the-outage"}),
        ("delete", "DELETE", f"/api/v1/agents/{doomed.id}", None),
        ("turn", "POST", f"/api/v1/sessions/{session.id}/turns", {"content": "posted-in-outage"}),
        ("history", "GET", f"/api/v1/sessions/{session.id}/messages", None),
        ("turn list", "GET", f"/api/v1/sessions/{session.id}/turns", None),
        ("long-poll", "GET", f"/api/v1/turns/{scene['running'].id}?wait=5", None),
    ]


def _call(client, user, method, path, body):
    return client.open(path, method=method, json=body, headers=user.headers)


def _assert_nothing_written(db, scene):
    db.expire_all()
    owned = Agent.user_id == scene["agent"].user_id
    assert db.scalar(select(func.count()).where(owned, Agent.name.like("%-in-the-outage"))) == 0
    assert db.get(Agent, scene["agent"].id).name == scene["agent"].name
    assert db.get(Agent, scene["doomed"].id).deleted_at is None
    assert db.scalar(select(func.count()).where(Message.content == "posted-in-outage")) == 0
    assert db.scalar(select(func.count()).where(Turn.session_id == scene["session"].id)) == 0


def _long_poll_in_thread(client, user, turn_id, wait):
    result = {}

    def poll():
        started = time.monotonic()
        result["response"] = _call(
            client, user, "GET", f"/api/v1/turns/{turn_id}?wait={wait}", None
        )
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, result


def _until_served(client, user, path) -> tuple[int, float]:
    """GET ``path`` until it answers 200; returns how many 503s came first, and the time."""
    started = time.monotonic()
    refused = 0
    while True:
        response = _call(client, user, "GET", path, None)
        if response.status_code == 200:
            return refused, time.monotonic() - started
        assert_unavailable(response)
        refused += 1
        assert time.monotonic() - started < RECOVERY_SECONDS, "no recovery in time"
        time.sleep(0.1)


def test_postgresql_outage_is_503_then_recovers_without_restart(
    proxied_app, proxy, scene, user, db, monkeypatch
):
    import models.turn_events

    # Waiters read the turn every 10-15 s without a notification; here, every half second.
    monkeypatch.setattr(models.turn_events, "SAFETY_REREAD", (0.4, 0.6))
    client = proxied_app.test_client()
    # Before: the app works through the proxy, with connections in its pool.
    for name, method, path, _ in _requests(scene):
        if method == "GET" and name != "long-poll":
            assert _call(client, user, method, path, None).status_code == 200, name
    assert proxy.connections > 0

    # A long-poll waiting when the database goes away answers 503 at its next read (its
    # unprompted re-read), not 500 and not at its deadline.
    poller, polled = _long_poll_in_thread(client, user, scene["running"].id, wait=20)
    time.sleep(0.3)
    proxy.cut()
    poller.join(timeout=10)
    assert not poller.is_alive()
    assert_unavailable(polled["response"])
    assert polled["seconds"] < 5

    # Every kind of request, twice: on the pool's dead connections, then on refused new ones.
    for _round in range(2):
        for name, method, path, body in _requests(scene):
            response = _call(client, user, method, path, body)
            assert response.status_code == 503, (name, response.status_code, response.json)
            assert_unavailable(response)
        time.sleep(1.1)  # past the idle-ping threshold: checkouts now ping first

    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"].isdigit()

    # Back: the same app serves again at once, without a restart.
    proxy.restore()
    refused, seconds = _until_served(client, user, "/api/v1/agents")
    assert seconds < RECOVERY_SECONDS and refused <= 1, (refused, seconds)
    _assert_nothing_written(db, scene)
    for name, method, path, body in _requests(scene):
        if name == "long-poll":
            path = path.replace("wait=5", "wait=0")
        response = _call(client, user, method, path, body)
        assert response.status_code in (200, 201, 202, 204), (name, response.json)
    assert client.get("/api/v1/health/ready").status_code == 200


def test_a_connection_cut_mid_request_is_503_and_the_pool_heals(proxied_app, proxy, scene, user):
    """Cut while connections sit in the pool used a moment ago (not pinged), restored at once:
    the request that meets a dead connection is a 503, and the pool drops every dead one, so
    the next request is served."""
    client = proxied_app.test_client()
    path = f"/api/v1/sessions/{scene['session'].id}/messages"
    for _ in range(3):
        assert _call(client, user, "GET", path, None).status_code == 200
    proxy.cut()
    proxy.restore()
    refused, _ = _until_served(client, user, path)
    assert refused <= 1
    for _ in range(5):
        assert _call(client, user, "GET", path, None).status_code == 200


def test_one_dead_connection_found_drops_every_pooled_one(postgres_url, proxy, monkeypatch):
    """After the server dropped every connection, the first one pinged (idle past the
    threshold) makes the pool drop all it held, those used moments ago too (never pinged)."""
    monkeypatch.setattr(db_module, "PING_IF_IDLE_SECONDS", 0.3)
    engine = make_engine(
        postgres_url.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False),
        pool_size=3,
    )
    try:
        held = [engine.connect() for _ in range(3)]
        for connection in held:
            connection.execute(text("SELECT 1"))
        held[0].close()  # the pool hands connections out first in, first out: this one first
        time.sleep(0.4)
        for connection in held[1:]:
            connection.close()
        proxy.cut()
        proxy.restore()
        # Three at once, so all three pooled connections are handed out: none of them dead.
        held = [engine.connect() for _ in range(3)]
        assert [c.execute(text("SELECT 1")).scalar_one() for c in held] == [1, 1, 1]
        for connection in held:
            connection.close()
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_path(settings):
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("SQLite's lock: PostgreSQL takes row locks and makes no writer wait for all")
    return url.database


def test_sqlite_locked_past_the_busy_timeout_is_503(
    settings, sqlite_path, monkeypatch, scene, user, db
):
    # A short busy timeout, so the test does not wait the default 5 s per write.
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    try:
        assert _call(client, user, "GET", "/api/v1/agents", None).status_code == 200
        writes = [r for r in _requests(scene) if r[1] != "GET"]
        locker = sqlite3.connect(sqlite_path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # the one write lock, held by another connection
        try:
            for name, method, path, body in writes:
                started = time.monotonic()
                response = _call(client, user, method, path, body)
                assert response.status_code == 503, (name, response.status_code, response.json)
                assert_unavailable(response)
                assert time.monotonic() - started < 3, name  # the busy timeout, not forever
            # Readers are not blocked by a writer (WAL).
            assert _call(client, user, "GET", "/api/v1/agents", None).status_code == 200
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        _assert_nothing_written(db, scene)
        for name, method, path, body in writes:
            response = _call(client, user, method, path, body)
            assert response.status_code in (201, 202, 200, 204), (name, response.json)
    finally:
        app.extensions["roomcast"].engine.dispose()


def test_a_broker_outage_outside_turn_posts_is_503(settings, migrated):
    """Turn POSTs ride a broker outage through the outbox (tests/test_turns.py); anything else
    that meets one says 503."""
    app = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})

    def needs_the_broker():
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:1.")

    needs_the_broker.public = True
    app.add_url_rule("/api/v1/needs-the-broker", view_func=needs_the_broker)
    client = app.test_client()
    assert_unavailable(client.get("/api/v1/needs-the-broker"), code="broker_unavailable")
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"].isdigit()
    assert ready.json["checks"]["broker"]["ok"] is False


def _dbapi(wrapper, orig):
    return wrapper("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (_dbapi(sa_exc.OperationalError, psycopg.OperationalError("connection refused")), True),
        (_dbapi(sa_exc.InterfaceError, psycopg.InterfaceError("the connection is closed")), True),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.AdminShutdown("terminating")), True),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.CannotConnectNow("starting up")), True),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.TooManyConnections("too many")), True),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.QueryCanceled("statement timeout")), True),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.DeadlockDetected("deadlock")), True),
        (_dbapi(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")), True),
        (sa_exc.DisconnectionError("pooled connection is dead"), True),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (psycopg.OperationalError("connection failed"), True),
        # What no retry cures stays what it is.
        (_dbapi(sa_exc.IntegrityError, psycopg.errors.UniqueViolation("duplicate key")), False),
        (_dbapi(sa_exc.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint")), False),
        (_dbapi(sa_exc.ProgrammingError, psycopg.errors.UndefinedTable("no table")), False),
        (_dbapi(sa_exc.DataError, psycopg.errors.UntranslatableCharacter("\\u0000")), False),
        (_dbapi(sa_exc.OperationalError, psycopg.errors.ProgramLimitExceeded("row size")), False),
        (_dbapi(sa_exc.OperationalError, sqlite3.OperationalError("no such table: x")), False),
        (_dbapi(sa_exc.OperationalError, sqlite3.OperationalError('near "x": syntax')), False),
        (sa_exc.InvalidRequestError("misuse"), False),
        (ValueError("not a database error"), False),
    ],
)
def test_which_database_errors_mean_unavailable(error, unavailable):
    assert is_database_unavailable(error) is unavailable


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (kombu.exceptions.OperationalError("down"), True),
        (redis.ConnectionError("refused"), True),
        (redis.TimeoutError("timed out"), True),
        (redis.ResponseError("WRONGTYPE"), False),
    ],
)
def test_which_broker_errors_mean_unavailable(error, unavailable):
    from api.broker import is_broker_unavailable

    assert is_broker_unavailable(error) is unavailable
