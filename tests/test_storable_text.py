"""Text the databases refuse (a NUL character, a lone surrogate) is a 422 naming the field on
every input, and a garbage bearer token is a 401: never a 500, never a half-written row."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import marshmallow as ma
import pytest
from sqlalchemy import func, select

import api
from api.schemas.storable import NUL_MESSAGE, SURROGATE_MESSAGE, Schema
from models import Agent, ChatSession, Message, Room, Turn

BAD_TEXT = {"nul": ("a\x00b", NUL_MESSAGE), "surrogate": ("a\ud800b", SURROGATE_MESSAGE)}


def _api_schemas() -> list[type[ma.Schema]]:
    """Every schema class defined in the api package (resources, schemas, pagination...)."""
    found = {}
    for info in pkgutil.walk_packages(api.__path__, prefix="api."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ma.Schema) and cls.__module__.startswith("api."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


SCHEMAS = _api_schemas()


def test_the_walk_finds_the_input_schemas():
    names = {cls.__name__ for cls in SCHEMAS}
    assert {
        "AgentSchema",
        "RoomSchema",
        "OrchestrationSchema",
        "SessionCreateSchema",
        "TurnCreateSchema",
        "IdempotencyHeaderSchema",
        "CursorArgsSchema",
        "NameSearchArgsSchema",
        "UsageArgsSchema",
        "LoginSchema",
        "RegisterSchema",
    } <= names


@pytest.mark.parametrize("schema_class", SCHEMAS, ids=lambda cls: cls.__qualname__)
def test_every_string_input_of_every_schema_refuses_unstorable_text(schema_class):
    """Each field a schema loads, whatever its type, reports a NUL or a lone surrogate under its
    own name (a new schema or field is covered by itself, or fails here)."""
    assert issubclass(schema_class, Schema), f"{schema_class} must derive from storable.Schema"
    schema = schema_class()
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        for text, message in BAD_TEXT.values():
            for value in (text, [text], {"k": text}, {text: 1}):
                with pytest.raises(ma.ValidationError) as caught:
                    schema.load({key: value}, partial=True)
                assert caught.value.messages == {key: [message]}, (schema_class, key, value)


def _count(db, model) -> int:
    db.rollback()  # a fresh snapshot
    return db.scalar(select(func.count()).select_from(model))


@pytest.fixture
def scene(user, make_agent, make_room, client):
    agent = make_agent(user)
    room = make_room(user, [agent])
    session = client.post(f"/api/v1/agents/{agent.id}/sessions", json={}, headers=user.headers).json
    return {"agent": agent.id, "room": room.id, "session": session["id"]}


# (method, path, body, field named in the error, model that must not gain a row)
WRITES = [
    ("post", "/api/v1/agents", {"name": "{bad}"}, "name", Agent),
    ("post", "/api/v1/agents", {"name": "ok", "system_prompt": "{bad}"}, "system_prompt", Agent),
    ("post", "/api/v1/agents", {"name": "ok", "tools": ["{bad}"]}, "tools", Agent),
    ("post", "/api/v1/agents", {"name": "ok", "metadata": {"k": ["{bad}"]}}, "metadata", Agent),
    ("post", "/api/v1/agents", {"name": "ok", "metadata": {"{bad}": 1}}, "metadata", Agent),
    ("patch", "/api/v1/agents/{agent}", {"description": "{bad}"}, "description", None),
    ("post", "/api/v1/rooms", {"name": "{bad}"}, "name", Room),
    (
        "post",
        "/api/v1/rooms",
        {"name": "ok", "orchestration": {"mode": "supervisor", "selector_model": "{bad}"}},
        "orchestration",
        Room,
    ),
    ("patch", "/api/v1/rooms/{room}", {"instructions": "{bad}"}, "instructions", None),
    ("post", "/api/v1/agents/{agent}/sessions", {"title": "{bad}"}, "title", ChatSession),
    ("post", "/api/v1/rooms/{room}/sessions", {"title": "{bad}"}, "title", ChatSession),
    ("patch", "/api/v1/sessions/{session}", {"title": "{bad}"}, "title", None),
    ("post", "/api/v1/sessions/{session}/turns", {"content": "{bad}"}, "content", Turn),
    ("post", "/api/v1/sessions/{session}/turns", {"content": "{bad}"}, "content", Message),
    (
        "post",
        "/api/v1/auth/tokens",
        {"email": "a@example.com", "password": "{bad}"},
        "password",
        None,
    ),
    (
        "post",
        "/api/v1/auth/register",
        {"email": "{bad}@example.com", "password": "x" * 10},
        "email",
        None,
    ),
]


def _fill(value, bad: str, ids: dict):
    if isinstance(value, str):
        return value.replace("{bad}", bad) if "{bad}" in value else value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, bad, ids) for v in value]
    if isinstance(value, dict):
        return {_fill(k, bad, ids): _fill(v, bad, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("kind", BAD_TEXT)
@pytest.mark.parametrize(
    "method, path, body, field, model", WRITES, ids=[f"{w[0]} {w[1]} {w[3]}" for w in WRITES]
)
def test_unstorable_text_in_a_body_is_422_and_writes_nothing(
    client, db, user, scene, kind, method, path, body, field, model
):
    bad, message = BAD_TEXT[kind]
    before = _count(db, model) if model else None
    r = getattr(client, method)(
        path.format(**scene), json=_fill(body, bad, scene), headers=user.headers
    )
    assert r.status_code == 422, r.json
    assert r.json["code"] == "validation_error"
    assert r.json["errors"] == {field: [message]}
    if model:
        assert _count(db, model) == before


def test_the_stored_rows_are_unchanged_after_a_refused_patch(client, db, user, scene):
    r = client.patch(
        f"/api/v1/agents/{scene['agent']}",
        json={"name": "renamed", "description": "x\x00"},
        headers=user.headers,
    )
    assert r.status_code == 422
    db.rollback()
    assert db.get(Agent, scene["agent"]).description == ""


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/v1/agents", {"q": "a\x00"}),
        ("/api/v1/rooms", {"q": "\x00"}),
        ("/api/v1/agents", {"cursor": "\x00"}),
        ("/api/v1/usage", {"group_by": "agent\x00"}),
        ("/api/v1/sessions/{session}/messages", {"order": "asc\x00"}),
        ("/api/v1/agents/{agent}/sessions", {"order": "\x00"}),
    ],
)
def test_a_nul_in_a_query_argument_is_422_naming_it(client, user, scene, path, params):
    r = client.get(path.format(**scene), query_string=params, headers=user.headers)
    assert r.status_code == 422, r.json
    ((name, _),) = params.items()
    assert r.json["errors"] == {name: [NUL_MESSAGE]}


@pytest.mark.parametrize("kind", BAD_TEXT)
def test_unstorable_idempotency_key_is_422_and_writes_nothing(client, db, user, scene, kind):
    bad, message = BAD_TEXT[kind]
    before = _count(db, Turn)
    r = client.post(
        f"/api/v1/sessions/{scene['session']}/turns",
        json={"content": "hello"},
        headers={**user.headers, "Idempotency-Key": bad},
    )
    assert r.status_code == 422, r.json
    assert r.json["errors"] == {"Idempotency-Key": [message]}
    assert _count(db, Turn) == before


@pytest.mark.parametrize(
    "secret",
    [
        "rc_\x00abc",
        "\x00",
        "\ud800",
        "rc_\udfff" + "a" * 40,
        "rc_é" + "a" * 40,
        "rc_" + "a" * 100_000,
        "rc_a\tb",
        "\x7f",
    ],
    ids=["nul", "only-nul", "surrogate", "trailing-surrogate", "latin1", "huge", "tab", "del"],
)
def test_a_garbage_bearer_token_is_401(client, secret):
    r = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401, r.json
    assert r.json == {"status": 401, "code": "unauthorized", "message": "Invalid or revoked token."}
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_real_token_still_works(client, user):
    assert client.get("/api/v1/auth/me", headers=user.headers).status_code == 200
