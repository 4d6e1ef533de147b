"""Test back ends: SQLite + embedded broker by default; PostgreSQL + Redis when
TEST_DATABASE_URL / TEST_BROKER_URL are set. Every test gets real components: a migrated
database and a real Celery worker consuming from the real broker.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass

import pytest

# The Python client of this checkout (clients/python), whichever copy the environment installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "clients", "python"))

_TMP = tempfile.mkdtemp(prefix="roomcast-tests-")
DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{_TMP}/roomcast.db"
BROKER_URL = os.environ.get("TEST_BROKER_URL") or "memory://localhost/"

# The worker and the API read their settings from the environment; set it before they import.
for _name in [k for k in os.environ if k.startswith("ROOMCAST_")]:
    del os.environ[_name]
os.environ.update(DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL)
os.environ.pop("CELERY_RESULT_BACKEND", None)

# One scripted OpenAI-compatible server for the whole run, known to the server's provider
# catalog as "fake" (so agents can use it through the API and the worker).
from tests.fake_llm import FakeLLM  # noqa: E402

FAKE_LLM = FakeLLM().start()
FAKE_PROVIDER = "fake"
FAKE_MODEL = "fake-model"
_PROVIDERS_FILE = os.path.join(_TMP, "providers.toml")
with open(_PROVIDERS_FILE, "w") as _file:
    _file.write(
        f"""[providers.{FAKE_PROVIDER}]
type = "openai"
base_url = "{FAKE_LLM.base_url}"
default_model = "{FAKE_MODEL}"
timeout = 5
max_retries = 2
[providers.{FAKE_PROVIDER}.prices."{FAKE_MODEL}"]
prompt = "1.25"
completion = "2.50"
"""
    )
os.environ["ROOMCAST_PROVIDERS_FILE"] = _PROVIDERS_FILE
# Uploaded files' bytes, under this run's temporary folder.
FILES_DIR = os.path.join(_TMP, "files")
os.environ["ROOMCAST_FILES_DIR"] = FILES_DIR
# The local model's server (one per host, worker/local_server.py): this run's own, stopped at
# its end.
RUNTIME_DIR = os.path.join(_TMP, "run")
os.environ["ROOMCAST_RUNTIME_DIR"] = RUNTIME_DIR
# The suite makes many requests as a few users, from one address: the rate limits and the login
# backoff are off for it; tests/test_limits.py builds apps with small ones of its own.
os.environ.update(
    ROOMCAST_RATE_LIMIT="off",
    ROOMCAST_ANONYMOUS_RATE_LIMIT="off",
    ROOMCAST_AUTH_RATE_LIMIT="off",
    ROOMCAST_LOGIN_BACKOFF_FAILURES="0",
)
# This process and the servers and workers it starts share one PostgreSQL of 100 connections,
# and every engine keeps the connections it opened (up to twice this): small pools for all.
os.environ["ROOMCAST_DB_POOL_SIZE"] = "4"

from sqlalchemy import text  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from models import User  # noqa: E402
from models.db import make_engine, make_sessionmaker  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.users import issue_token  # noqa: E402
from tests.live_server import live_server  # noqa: E402,F401  (a fixture)

PASSWORD = "correct horse battery"
# One slow hash for the whole run: the factory inserts users directly.
_PASSWORD_HASH = generate_password_hash(PASSWORD)
_counter = itertools.count()


def is_postgres() -> bool:
    return DATABASE_URL.startswith("postgresql")


def _reset_database() -> None:
    if is_postgres():
        engine = make_engine(DATABASE_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def _reset_broker() -> None:
    if BROKER_URL.startswith("redis"):
        import redis

        redis.Redis.from_url(BROKER_URL).flushdb()


@pytest.fixture(scope="session", autouse=True)
def _local_model_servers_stopped():
    yield
    from pathlib import Path

    from worker.local_server import stop_servers

    stop_servers(Path(RUNTIME_DIR))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def migrated(settings):
    """The test database, migrated to head through Alembic once per run."""
    from tests.helpers import migrate_to_head

    _reset_database()
    _reset_broker()
    migrate_to_head(settings.database_url)
    return settings.database_url


@pytest.fixture(scope="session")
def engine(migrated, settings):
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine):
    """A session on the test database; rolled back and closed after the test."""
    with make_sessionmaker(engine)() as session:
        yield session
        session.rollback()


@pytest.fixture(scope="session")
def app(migrated, settings):
    from api import create_app

    return create_app(settings, test_config={"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cursor_of(app):
    """``cursor_of([key])``: the cursor the app would answer for that sort key (it is signed)."""
    from api.pagination import encode_cursor

    return lambda key: encode_cursor(key, secret=app.config["SECRET_KEY"])


@pytest.fixture(scope="session")
def celery_worker(migrated):
    """A real Celery worker consuming from the test broker, in a thread of this process."""
    from worker import app as celery_app
    from worker.embedded import start_embedded_worker, stop_embedded_worker

    worker = start_embedded_worker(celery_app, concurrency=4)
    yield worker
    stop_embedded_worker(worker)


@dataclass
class TestUser:
    __test__ = False
    id: int
    email: str
    token: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(engine):
    """Factory: ``make_user()`` inserts a user with a token and returns it."""
    sessionmaker = make_sessionmaker(engine)

    def make(email: str | None = None) -> TestUser:
        email = email or f"user{next(_counter)}-{uuid.uuid4().hex[:8]}@example.com"
        with sessionmaker() as session:
            user = User(email=email, password_hash=_PASSWORD_HASH)
            session.add(user)
            _, secret = issue_token(session, user, name="test")
            session.commit()
            return TestUser(id=user.id, email=email, token=secret)

    return make


@pytest.fixture
def user(make_user) -> TestUser:
    return make_user()


@pytest.fixture
def make_agent(engine):
    """Factory: ``make_agent(user, name=..., **fields)``; agents answer on the instant provider."""
    from models import Agent

    sessionmaker = make_sessionmaker(engine)

    def make(owner: TestUser, name: str | None = None, **fields):
        fields.setdefault("provider", "instant")
        fields.setdefault("model", "instant")
        with sessionmaker() as session:
            agent = Agent(user_id=owner.id, name=name or f"agent{next(_counter)}", **fields)
            session.add(agent)
            session.commit()
            return agent

    return make


@pytest.fixture
def make_room(engine):
    """Factory: ``make_room(user, [agents], mode=..., max_rounds=...)`` with members in order."""
    from models import Room, RoomAgent

    sessionmaker = make_sessionmaker(engine)

    def make(owner: TestUser, agents=(), **fields):
        with sessionmaker() as session:
            room = Room(
                user_id=owner.id, name=fields.pop("name", f"room{next(_counter)}"), **fields
            )
            session.add(room)
            session.flush()
            for position, agent in enumerate(agents, start=1):
                session.add(RoomAgent(room_id=room.id, agent_id=agent.id, position=position))
            session.commit()
            return room

    return make


@pytest.fixture(scope="session")
def fake_llm_server():
    yield FAKE_LLM


@pytest.fixture
def fake_llm(fake_llm_server, monkeypatch):
    """The scripted OpenAI-compatible server of tests/fake_llm.py, emptied for this test.

    Provider retries wait at most a few milliseconds meanwhile (Retry-After up to 1 s is still
    honoured), so retry paths stay fast.
    """
    from worker.providers import openai_compat

    monkeypatch.setattr(
        openai_compat,
        "DEFAULT_RETRY_POLICY",
        openai_compat.RetryPolicy(backoff_initial=0.001, backoff_max=0.005, retry_after_max=1.0),
    )
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture(scope="module")
def held_app(migrated, settings):
    """The app, with turns accepted and kept queued (no worker of a later test runs them).

    Their event streams would wait for an end that never comes: they close after a moment."""
    from dataclasses import replace

    from api import create_app
    from tests.api_world import HeldTasks

    quick_streams = replace(settings, sse_max_seconds=0.2, sse_heartbeat_seconds=0.05)
    app = create_app(quick_streams, test_config={"TESTING": True})
    app.extensions["roomcast"].celery = HeldTasks()
    return app


@pytest.fixture
def held_client(held_app):
    return held_app.test_client()


@pytest.fixture(scope="module")
def spec(held_app):
    """The app's OpenAPI document."""
    from tests.api_world import OPENAPI_PATH

    return held_app.test_client().get(OPENAPI_PATH).json
