"""Small helpers for the turn tests: client calls, and a turn's history written directly."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from models import ChatSession, Message, Turn

TERMINAL = {"completed", "failed", "cancelled"}


def start_session(client, user, *, agent=None, room=None, **body):
    scope = f"/api/v1/agents/{agent.id}" if agent is not None else f"/api/v1/rooms/{room.id}"
    response = client.post(f"{scope}/sessions", json=body, headers=user.headers)
    assert response.status_code == 201, response.json
    return response.json


def post_turn(client, user, session_id, content="hello", headers=None, **body):
    return client.post(
        f"/api/v1/sessions/{session_id}/turns",
        json={"content": content, **body},
        headers={**user.headers, **(headers or {})},
    )


def wait_done(client, user, turn_id, timeout=30.0):
    """Long-poll the turn until it is terminal; returns its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/turns/{turn_id}?wait=5", headers=user.headers)
        assert response.status_code == 200, response.json
        if response.json["status"] in TERMINAL:
            return response.json
    raise AssertionError(f"turn {turn_id} did not finish within {timeout} s: {response.json}")


def messages(client, user, session_id, **params):
    response = client.get(
        f"/api/v1/sessions/{session_id}/messages",
        query_string={"limit": 100, **params},
        headers=user.headers,
    )
    assert response.status_code == 200, response.json
    return response.json["data"]


def celery_worker_process(queue: str, log_path, **env) -> subprocess.Popen:
    """``celery -A worker worker`` (the production entry point) consuming only ``queue``."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-Q",
                queue,
                "-P",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
        )


def accept_undispatched(settings, user, session_id, content="hello", **body):
    """POST a turn through an API whose broker is unreachable: accepted (queued) and not sent,
    so that a test decides who runs it; returns the turn's id."""
    from dataclasses import replace

    from api import create_app

    app = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    response = post_turn(app.test_client(), user, session_id, content, **body)
    assert response.status_code == 202, response.json
    return response.json["id"]


def seed_turn(db, user, agent, rows) -> int:
    """A session of ``user`` with ``agent`` and one completed turn whose messages are ``rows``
    (Message fields, one dict a step); returns the session's id."""
    session = ChatSession(user_id=user.id, agent_id=agent.id)
    db.add(session)
    db.flush()
    turn = Turn(session_id=session.id, user_id=user.id, status="completed")
    db.add(turn)
    db.flush()
    for step, fields in enumerate(rows):
        db.add(Message(session_id=session.id, turn_id=turn.id, step=step, **fields))
    db.commit()
    return session.id


def migrate_to_head(database_url: str) -> None:
    """The database migrated to head through Alembic, as `make migrate` does."""
    from alembic import command

    from models.schema_version import alembic_config

    config = alembic_config(database_url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
