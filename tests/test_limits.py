"""Rate limits, the login backoff and the per-user caps (README "Limits").

Each test builds its own app with small limits; the suite's shared app has them off. With a
Redis broker the counters live in Redis (as in production) and the last tests check that two
apps, like two API processes, share them.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from models import Agent, ChatSession, Room, UploadedFile
from models.settings import ConfigError, Settings
from tests.conftest import BROKER_URL, PASSWORD
from tests.factories import AGENTS, ROOMS
from tests.files_helpers import upload

ME = "/api/v1/auth/me"
TOKENS = "/api/v1/auth/tokens"
REGISTER = "/api/v1/auth/register"
HEALTH = "/api/v1/health"
OPENAPI = "/api/v1/docs/openapi.json"
ALL_OFF = dict(
    rate_limit=None,
    anonymous_rate_limit=None,
    auth_rate_limit=None,
    login_backoff_failures=0,
)

_addresses = itertools.count(1)


def new_address() -> str:
    """A client address of this test alone (the Redis counters outlive one app)."""
    n = next(_addresses)
    return f"10.{uuid.uuid4().int % 200}.{n // 250}.{n % 250 + 1}"


@pytest.fixture
def limited_app(settings, migrated):
    """``limited_app(**settings_changes)``: an app of its own, every limit off unless given."""
    from api import create_app
    from api.state import state

    apps = []

    def make(**changes):
        # The limits count in windows of a minute, weighing the previous one as it slides out:
        # a few requests on both sides of a minute's start count as fewer than they are. The
        # tests make theirs within seconds, so they start clear of that edge.
        if (into_the_minute := time.time() % 60) > 50:
            time.sleep(60.5 - into_the_minute)
        app = create_app(replace(settings, **{**ALL_OFF, **changes}), {"TESTING": True})
        apps.append(app)
        return app

    yield make
    for app in apps:
        state(app).engine.dispose()


def client_at(app, address: str | None = None):
    """A test client whose requests come from ``address`` (a new one by default)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address or new_address()
    return client


def assert_rate_limited(response, code="rate_limited") -> int:
    assert response.status_code == 429, response.json
    assert response.json["status"] == 429 and response.json["code"] == code
    assert response.json["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1 and response.json["retry_after"] == retry_after
    return retry_after


def login(client, email, password=PASSWORD):
    return client.post(TOKENS, json={"email": email, "password": password, "name": "t"})


# --- rate limits ---------------------------------------------------------------------------


def test_per_user_limit_answers_429_with_retry_after(limited_app, make_user):
    app = limited_app(rate_limit="3/minute")
    alice, bob = make_user(), make_user()
    client = client_at(app)
    for _ in range(3):
        assert client.get(ME, headers=alice.headers).status_code == 200
    retry_after = assert_rate_limited(client.get(ME, headers=alice.headers))
    assert retry_after <= 60
    assert "3 per 1 minute" in client.get(ME, headers=alice.headers).json["message"]
    # One budget per user across the API and whatever the address...
    assert_rate_limited(client.get(AGENTS, headers=alice.headers))
    assert_rate_limited(client_at(app).get(ME, headers=alice.headers))
    # ...and another user has a budget of their own, even from the same address.
    assert client.get(ME, headers=bob.headers).status_code == 200
    # Health checks and the API documents are never limited.
    for _ in range(5):
        assert client.get(HEALTH).status_code == 200
        assert client.get(OPENAPI).status_code == 200


def test_anonymous_requests_are_limited_per_address(limited_app, make_user):
    app = limited_app(anonymous_rate_limit="2/minute")
    user = make_user()
    client = client_at(app)
    assert login(client, user.email, "wrong password").status_code == 401
    assert login(client, user.email, "wrong password").status_code == 401
    assert_rate_limited(login(client, user.email))
    # Another address has its own budget; a token's requests count against its user.
    assert login(client_at(app), user.email).status_code == 201
    assert client.get(ME, headers=user.headers).status_code == 200
    # Health checks, the API documents and the console page stay open to an address over its
    # limit (so a client held back can still load the page and read why).
    for _ in range(3):
        assert client.get(HEALTH).status_code == 200
        assert client.get(f"{HEALTH}/ready").status_code in (200, 503)
        assert client.get(OPENAPI).status_code == 200
        assert client.get("/api/v1/docs/").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/console/console.js").status_code == 200


def test_register_and_token_creation_have_tighter_limits(limited_app, make_user):
    app = limited_app(rate_limit="100/minute", auth_rate_limit="2/minute")
    client = client_at(app)
    for _ in range(2):
        email = f"r-{uuid.uuid4().hex[:10]}@example.com"
        response = client.post(REGISTER, json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.json
    email = f"r-{uuid.uuid4().hex[:10]}@example.com"
    assert_rate_limited(client.post(REGISTER, json={"email": email, "password": PASSWORD}))
    # Login has a budget of its own, and other addresses are not affected.
    user = make_user()
    assert login(client, user.email).status_code == 201
    assert login(client, user.email).status_code == 201
    assert_rate_limited(login(client, user.email))
    other = client_at(app)
    assert other.post(REGISTER, json={"email": email, "password": PASSWORD}).status_code == 201
    # The rest of the auth API keeps the general limit only.
    for _ in range(5):
        assert client.get(ME, headers=user.headers).status_code == 200
        assert client.get(TOKENS, headers=user.headers).status_code == 200


def test_limits_off_allow_everything(limited_app, make_user):
    app = limited_app()
    user, client = make_user(), client_at(app)
    for _ in range(30):
        assert client.get(ME, headers=user.headers).status_code == 200
        assert login(client, user.email, "wrong password").status_code == 401
    assert login(client, user.email).status_code == 201


# --- login backoff -------------------------------------------------------------------------


def test_login_backoff_refuses_even_the_right_password_then_recovers(limited_app, make_user):
    app = limited_app(login_backoff_failures=3, login_backoff_seconds=1)
    user = make_user()
    for _ in range(3):  # from a different address each time: the count is per email
        assert login(client_at(app), user.email, "wrong password").status_code == 401
    refused = login(client_at(app), user.email.upper())
    retry_after = assert_rate_limited(refused, code="login_backoff")
    assert retry_after == 1
    time.sleep(retry_after + 0.2)
    assert login(client_at(app), user.email).status_code == 201
    # The success reset the count: the next lock takes three failures again.
    for _ in range(2):
        assert login(client_at(app), user.email, "wrong password").status_code == 401
    assert login(client_at(app), user.email).status_code == 201


def test_login_backoff_grows_exponentially_and_covers_unknown_emails(limited_app, make_user):
    app = limited_app(
        login_backoff_failures=2, login_backoff_seconds=1, login_backoff_max_seconds=60
    )
    user = make_user()
    for _ in range(2):
        assert login(client_at(app), user.email, "wrong password").status_code == 401
    time.sleep(assert_rate_limited(login(client_at(app), user.email), "login_backoff") + 0.2)
    # Each failure past the threshold doubles the wait.
    assert login(client_at(app), user.email, "wrong password").status_code == 401
    assert assert_rate_limited(login(client_at(app), user.email), "login_backoff") == 2
    # An unknown email behaves the same (the backoff does not tell which emails exist).
    ghost = f"ghost-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(2):
        assert login(client_at(app), ghost, "wrong password").status_code == 401
    assert_rate_limited(login(client_at(app), ghost), "login_backoff")
    # Tokens already issued keep working meanwhile.
    assert client_at(app).get(ME, headers=user.headers).status_code == 200


# --- per-user caps -------------------------------------------------------------------------


def live_count(db, model, user) -> int:
    return db.scalar(
        select(func.count())
        .select_from(model)
        .where(model.user_id == user.id, model.deleted_at.is_(None))
    )


def assert_limit_reached(response, variable: str, cap: int):
    assert response.status_code == 409, response.json
    body = response.json
    assert body["status"] == 409 and body["code"] == "limit_reached"
    assert variable in body["message"] and str(cap) in body["message"]
    assert body["limit"] == cap and body["setting"] == variable


@pytest.mark.parametrize(
    ("url", "model", "attribute", "variable"),
    [
        (AGENTS, Agent, "max_agents_per_user", "ROOMCAST_MAX_AGENTS_PER_USER"),
        (ROOMS, Room, "max_rooms_per_user", "ROOMCAST_MAX_ROOMS_PER_USER"),
    ],
)
def test_agent_and_room_caps(limited_app, make_user, db, url, model, attribute, variable):
    app = limited_app(**{attribute: 2})
    user, client = make_user(), client_at(app)
    created = [client.post(url, json={"name": f"n{i}"}, headers=user.headers) for i in range(2)]
    assert [r.status_code for r in created] == [201, 201]
    assert_limit_reached(client.post(url, json={"name": "n2"}, headers=user.headers), variable, 2)
    assert live_count(db, model, user) == 2
    # Another user has a cap of their own; a deleted row frees its place.
    assert client.post(url, json={"name": "n0"}, headers=make_user().headers).status_code == 201
    deleted = client.delete(f"{url}/{created[0].json['id']}", headers=user.headers)
    assert deleted.status_code == 204
    assert client.post(url, json={"name": "n3"}, headers=user.headers).status_code == 201
    assert live_count(db, model, user) == 2
    # 0: no cap.
    unlimited = client_at(limited_app(**{attribute: 0}))
    for i in range(3):
        response = unlimited.post(url, json={"name": f"u{i}"}, headers=user.headers)
        assert response.status_code == 201
    assert live_count(db, model, user) == 5


def test_session_cap_counts_room_and_agent_sessions(limited_app, make_user, db):
    app = limited_app(max_sessions_per_user=2)
    user, client = make_user(), client_at(app)
    agent = client.post(AGENTS, json={"name": "a"}, headers=user.headers).json
    room = client.post(ROOMS, json={"name": "r"}, headers=user.headers).json
    first = client.post(f"{AGENTS}/{agent['id']}/sessions", json={}, headers=user.headers)
    assert first.status_code == 201
    assert (
        client.post(f"{ROOMS}/{room['id']}/sessions", json={}, headers=user.headers).status_code
        == 201
    )
    for url in (f"{AGENTS}/{agent['id']}/sessions", f"{ROOMS}/{room['id']}/sessions"):
        response = client.post(url, json={}, headers=user.headers)
        assert_limit_reached(response, "ROOMCAST_MAX_SESSIONS_PER_USER", 2)
    assert live_count(db, ChatSession, user) == 2
    gone = client.delete(f"/api/v1/sessions/{first.json['id']}", headers=user.headers)
    assert gone.status_code == 204
    again = client.post(f"{AGENTS}/{agent['id']}/sessions", json={}, headers=user.headers)
    assert again.status_code == 201
    unlimited = client_at(limited_app(max_sessions_per_user=0))
    for _ in range(2):
        response = unlimited.post(f"{ROOMS}/{room['id']}/sessions", json={}, headers=user.headers)
        assert response.status_code == 201
    assert live_count(db, ChatSession, user) == 4


def test_file_cap(limited_app, make_user, db):
    app = limited_app(max_files_per_user=1)
    user, client = make_user(), client_at(app)
    first = upload(client, user, "a.txt", b"first file")
    assert first.status_code == 201, first.json
    second = upload(client, user, "b.txt", b"second file")
    assert_limit_reached(second, "ROOMCAST_MAX_FILES_PER_USER", 1)
    assert live_count(db, UploadedFile, user) == 1
    assert (
        client.delete(f"/api/v1/files/{first.json['id']}", headers=user.headers).status_code == 204
    )
    assert upload(client, user, "b.txt", b"second file").status_code == 201
    unlimited = client_at(limited_app(max_files_per_user=0))
    assert upload(unlimited, user, "c.txt", b"third file").status_code == 201
    assert live_count(db, UploadedFile, user) == 2


def test_concurrent_creates_at_the_cap_do_not_both_pass(limited_app, make_user, db):
    app = limited_app(max_agents_per_user=3)
    user = make_user()
    client = client_at(app)
    for i in range(2):
        assert client.post(AGENTS, json={"name": f"a{i}"}, headers=user.headers).status_code == 201
    statuses: list[int] = []
    start = threading.Barrier(6)

    def create(i: int) -> None:
        start.wait()
        response = client_at(app).post(AGENTS, json={"name": f"c{i}"}, headers=user.headers)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 5
    assert live_count(db, Agent, user) == 3


# --- settings ------------------------------------------------------------------------------


def test_limit_settings_are_parsed():
    s = Settings.from_env({})
    assert (s.rate_limit, s.anonymous_rate_limit) == ("600/minute", "120/minute")
    assert s.auth_rate_limit == "20/minute;200/hour" and s.login_backoff_failures == 5
    assert (s.max_agents_per_user, s.max_rooms_per_user) == (1000, 1000)
    assert (s.max_sessions_per_user, s.max_files_per_user) == (100_000, 10_000)
    assert s.ratelimit_storage == "memory://"
    s = Settings.from_env(
        {
            "CELERY_BROKER_URL": "redis://broker:6379/0",
            "ROOMCAST_RATE_LIMIT": "off",
            "ROOMCAST_AUTH_RATE_LIMIT": "5/minute; 50/day",
            "ROOMCAST_MAX_AGENTS_PER_USER": "0",
        }
    )
    assert s.rate_limit is None and s.auth_rate_limit == "5/minute; 50/day"
    assert s.max_agents_per_user == 0 and s.ratelimit_storage == "redis://broker:6379/0"
    s = Settings.from_env({"ROOMCAST_RATELIMIT_STORAGE_URL": "redis://limits:6379/3"})
    assert s.ratelimit_storage == "redis://limits:6379/3"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROOMCAST_RATE_LIMIT", "lots"),
        ("ROOMCAST_ANONYMOUS_RATE_LIMIT", "10 per fortnight"),
        ("ROOMCAST_AUTH_RATE_LIMIT", "0/minute"),
        ("ROOMCAST_RATELIMIT_STORAGE_URL", "memcached://x:11211"),
        ("ROOMCAST_LOGIN_BACKOFF_FAILURES", "-1"),
        ("ROOMCAST_MAX_FILES_PER_USER", "many"),
    ],
)
def test_bad_limit_settings_fail_fast(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


# --- shared storage (Redis) ----------------------------------------------------------------

needs_redis = pytest.mark.skipif(
    not BROKER_URL.startswith("redis"), reason="shared storage needs the Redis broker"
)


@needs_redis
def test_two_app_processes_share_the_rate_limit(limited_app, make_user):
    first, second = limited_app(rate_limit="4/minute"), limited_app(rate_limit="4/minute")
    user = make_user()
    for app in (first, second, first, second):
        assert client_at(app).get(ME, headers=user.headers).status_code == 200
    assert_rate_limited(client_at(first).get(ME, headers=user.headers))
    assert_rate_limited(client_at(second).get(ME, headers=user.headers))


@needs_redis
def test_two_app_processes_share_the_login_backoff(limited_app, make_user):
    changes = dict(login_backoff_failures=2, login_backoff_seconds=30)
    first, second = limited_app(**changes), limited_app(**changes)
    user = make_user()
    assert login(client_at(first), user.email, "wrong password").status_code == 401
    assert login(client_at(second), user.email, "wrong password").status_code == 401
    assert_rate_limited(login(client_at(first), user.email), "login_backoff")
    assert_rate_limited(login(client_at(second), user.email), "login_backoff")


def test_an_unreachable_limit_storage_falls_back_to_counting_in_memory(limited_app, make_user):
    # Nothing listens on port 1: every request finds the shared storage down.
    app = limited_app(rate_limit="3/minute", ratelimit_storage_url="redis://127.0.0.1:1/0")
    user, client = make_user(), client_at(app)
    for _ in range(3):
        assert client.get(ME, headers=user.headers).status_code == 200
    assert_rate_limited(client.get(ME, headers=user.headers))
