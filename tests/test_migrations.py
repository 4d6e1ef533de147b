"""One Alembic chain, up and down on the test back end, and in step with the models."""

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from models import Base, ChatSession
from models.db import make_engine
from models.schema_version import alembic_config, code_head, database_revision, include_name
from tests.conftest import DATABASE_URL, is_postgres


@pytest.fixture
def scratch_url(tmp_path):
    """An empty database of the test back end: a SQLite file or a PostgreSQL schema."""
    if not is_postgres():
        yield f"sqlite:///{tmp_path}/scratch.db"
        return
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    admin = make_engine(DATABASE_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in DATABASE_URL else "?"
    yield f"{DATABASE_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _config(url):
    config = alembic_config(url)
    config.attributes["configure_logger"] = False
    return config


def test_upgrade_downgrade_round_trip(scratch_url):
    engine = make_engine(scratch_url)
    command.upgrade(_config(scratch_url), "head")
    with engine.connect() as conn:
        assert database_revision(conn) == code_head()
        tables = set(inspect(conn).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables

    command.downgrade(_config(scratch_url), "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        assert database_revision(conn) is None

    command.upgrade(_config(scratch_url), "head")
    with engine.connect() as conn:
        assert database_revision(conn) == code_head()
    engine.dispose()


def test_models_and_migrations_agree(engine):
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            ),
            Base.metadata,
        )
    assert diff == [], f"models differ from migrations; run alembic revision --autogenerate: {diff}"


def test_single_linear_chain():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config(None))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


@pytest.mark.parametrize("scope", [{"room_id": None, "agent_id": None}, "both"])
def test_session_scope_check_constraint(db, user, scope):
    from models import Agent, Room

    agent = Agent(user_id=user.id, name=f"a-{uuid.uuid4().hex[:6]}", provider="x", model="m")
    room = Room(user_id=user.id, name="r")
    db.add_all([agent, room])
    db.flush()
    if scope == "both":
        scope = {"room_id": room.id, "agent_id": agent.id}
    db.add(ChatSession(user_id=user.id, **scope))
    with pytest.raises(IntegrityError) as excinfo:
        db.flush()
    assert "ck_sessions_scope" in str(excinfo.value) or "CHECK" in str(excinfo.value)


def test_session_scope_accepts_exactly_one(db, user):
    from models import Agent, Room

    agent = Agent(user_id=user.id, name=f"a-{uuid.uuid4().hex[:6]}", provider="x", model="m")
    room = Room(user_id=user.id, name="r")
    db.add_all([agent, room])
    db.flush()
    db.add_all(
        [
            ChatSession(user_id=user.id, room_id=room.id),
            ChatSession(user_id=user.id, agent_id=agent.id),
        ]
    )
    db.flush()


def test_migrating_a_fresh_checkout_creates_the_sqlite_folder(tmp_path):
    # `make run` on a fresh clone migrates var/roomcast.db before anything made var/.
    path = tmp_path / "var" / "roomcast.db"
    command.upgrade(_config(f"sqlite:///{path}"), "head")
    assert path.is_file()
