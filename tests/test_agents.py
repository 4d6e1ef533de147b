"""Agents: CRUD, defaults, the provider catalog, validation, lists and soft deletion."""

import json

import pytest
from sqlalchemy import select

from models import Agent, ChatSession, utcnow
from models.providers import LOCAL_MODEL
from tests.factories import AGENTS, create_agent, walk


def agent_url(agent_id):
    return f"{AGENTS}/{agent_id}"


def my_agents(client, user):
    return walk(client, user, AGENTS, limit=100)


def test_a_name_is_enough_for_a_working_offline_agent(client, user, settings):
    r = client.post(AGENTS, json={"name": "  scribe  "}, headers=user.headers)
    assert r.status_code == 201
    agent = r.json
    assert agent["name"] == "scribe"
    assert agent["provider"] == settings.default_provider == "local"
    assert agent["model"] == LOCAL_MODEL
    assert agent | {"id": 0, "created_at": 0, "updated_at": 0} == {
        "id": 0,
        "name": "scribe",
        "description": "",
        "provider": "local",
        "model": LOCAL_MODEL,
        "system_prompt": "",
        "temperature": None,
        "max_tokens": None,
        "tools": [],
        "metadata": {},
        "created_at": 0,
        "updated_at": 0,
    }
    assert agent["created_at"] and agent["updated_at"]


def test_crud(client, user):
    body = {
        "name": "writer",
        "description": "Drafts release notes.",
        "provider": "instant",
        "model": "any-model",
        "system_prompt": "Be brief.",
        "temperature": 0.3,
        "max_tokens": 256,
        "tools": ["search", "file_read"],
        "metadata": {"team": "docs", "nested": {"ok": [1, 2]}},
    }
    created = client.post(AGENTS, json=body, headers=user.headers).json
    assert {k: created[k] for k in body} == body
    url = agent_url(created["id"])
    assert client.get(url, headers=user.headers).json == created

    r = client.patch(url, json={"temperature": None, "tools": []}, headers=user.headers)
    assert r.status_code == 200
    assert r.json["temperature"] is None and r.json["tools"] == []
    assert r.json["name"] == "writer" and r.json["metadata"] == body["metadata"]
    assert r.json["updated_at"] >= created["updated_at"]
    assert client.get(url, headers=user.headers).json == r.json

    assert [a["id"] for a in my_agents(client, user)] == [created["id"]]
    assert client.delete(url, headers=user.headers).status_code == 204
    for method in ("get", "patch", "delete"):
        r = getattr(client, method)(url, json={}, headers=user.headers)
        assert r.status_code == 404 and r.json["code"] == "not_found"
    assert my_agents(client, user) == []


def test_patch_replaces_metadata_and_an_empty_patch_changes_nothing(client, user):
    agent = create_agent(client, user, metadata={"a": 1, "b": 2})
    r = client.patch(agent_url(agent["id"]), json={"metadata": {"c": 3}}, headers=user.headers)
    assert r.json["metadata"] == {"c": 3}
    again = client.patch(agent_url(agent["id"]), json={}, headers=user.headers)
    assert again.status_code == 200 and again.json == r.json


def test_names_are_unique_among_a_users_live_agents(client, user, make_user):
    first = create_agent(client, user, name="twin")
    r = client.post(AGENTS, json={"name": " twin "}, headers=user.headers)
    assert r.status_code == 409
    assert r.json == {
        "status": 409,
        "code": "name_taken",
        "message": "You already have an agent named 'twin'.",
    }
    # Another user may use the name.
    create_agent(client, make_user(), name="twin")
    # Renaming onto a taken name is refused and changes nothing.
    other = create_agent(client, user, name="other")
    r = client.patch(agent_url(other["id"]), json={"name": "twin"}, headers=user.headers)
    assert r.status_code == 409 and r.json["code"] == "name_taken"
    assert client.get(agent_url(other["id"]), headers=user.headers).json == other
    # A deleted agent frees its name.
    client.delete(agent_url(first["id"]), headers=user.headers)
    assert create_agent(client, user, name="twin")["id"] != first["id"]
    assert [a["name"] for a in my_agents(client, user)] == ["other", "twin"]


def test_provider_and_model_come_from_the_catalog(client, user):
    r = client.post(AGENTS, json={"name": "a", "provider": "nope"}, headers=user.headers)
    assert r.status_code == 422
    assert "Unknown provider 'nope'" in r.json["errors"]["provider"][0]
    r = client.post(AGENTS, json={"name": "a", "model": "gpt-4o"}, headers=user.headers)
    assert r.status_code == 422 and list(r.json["errors"]) == ["model"]
    assert my_agents(client, user) == []

    # The instant provider takes any model name; its default model is "instant".
    agent = create_agent(client, user, provider="instant")
    assert agent["model"] == "instant"
    url = agent_url(agent["id"])
    r = client.patch(url, json={"model": "custom"}, headers=user.headers)
    assert (r.json["provider"], r.json["model"]) == ("instant", "custom")

    # Changing provider alone moves to that provider's default model...
    r = client.patch(url, json={"provider": "local"}, headers=user.headers)
    assert (r.json["provider"], r.json["model"]) == ("local", LOCAL_MODEL)
    # ...and a model is checked against the provider it ends up with.
    r = client.patch(url, json={"model": "custom"}, headers=user.headers)
    assert r.status_code == 422 and list(r.json["errors"]) == ["model"]
    r = client.patch(url, json={"provider": "nope", "model": "x"}, headers=user.headers)
    assert r.status_code == 422 and list(r.json["errors"]) == ["provider"]
    assert client.get(url, headers=user.headers).json["model"] == LOCAL_MODEL
    r = client.patch(url, json={"provider": "instant", "model": "m"}, headers=user.headers)
    assert (r.json["provider"], r.json["model"]) == ("instant", "m")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"description": "x" * 2001}, "description"),
        ({"system_prompt": "x" * (32 * 1024 + 1)}, "system_prompt"),
        ({"system_prompt": ["not", "text"]}, "system_prompt"),
        ({"provider": 3}, "provider"),
        ({"model": ""}, "model"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": "1.5"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 32769}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"tools": "search"}, "tools"),
        ({"tools": ["search", "search"]}, "tools"),
        ({"tools": ["shell"]}, "tools"),
        ({"tools": [1]}, "tools"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": None}, "metadata"),
        ({"metadata": {"blob": "x" * 4096}}, "metadata"),
        ({"colour": "blue"}, "colour"),
        ({"id": 99}, "id"),
        ({"user_id": 1}, "user_id"),
        ({"created_at": "2030-01-01T00:00:00Z"}, "created_at"),
        ({"deleted_at": None}, "deleted_at"),
    ],
)
def test_invalid_create_is_422_and_writes_nothing(client, user, body, field):
    if field != "name":
        body = {"name": "valid", **body}
    r = client.post(AGENTS, json=body, headers=user.headers)
    assert r.status_code == 422
    assert r.json["code"] == "validation_error"
    assert field in r.json["errors"], r.json
    assert my_agents(client, user) == []


def test_metadata_is_bounded_by_its_serialized_size(client, user):
    # {"k":"…"} is 8 bytes around the value: 4096 bytes in all is accepted, one more is not.
    fits = {"k": "é" * ((4096 - 8) // 2)}
    assert len(json.dumps(fits, separators=(",", ":"), ensure_ascii=False).encode()) == 4096
    assert create_agent(client, user, metadata=fits)["metadata"] == fits
    r = client.post(
        AGENTS, json={"name": "big", "metadata": {"k": fits["k"] + "x"}}, headers=user.headers
    )
    assert r.status_code == 422 and "4096 bytes" in r.json["errors"]["metadata"][0]


@pytest.mark.parametrize(
    "body",
    [
        {"id": 12345},
        {"user_id": 1},
        {"created_at": "2030-01-01T00:00:00Z"},
        {"updated_at": "2030-01-01T00:00:00Z"},
        {"deleted_at": "2030-01-01T00:00:00Z"},
        {"name": "renamed", "id": 12345},
        {"name": "renamed", "temperature": 9},
        {"name": None},
        {"tools": ["search", "nope"]},
        {"provider": "nope"},
    ],
)
def test_invalid_patch_is_422_and_changes_nothing(client, user, body):
    agent = create_agent(client, user)
    url = agent_url(agent["id"])
    r = client.patch(url, json=body, headers=user.headers)
    assert r.status_code == 422 and r.json["code"] == "validation_error"
    assert client.get(url, headers=user.headers).json == agent


def test_list_filters_by_name_and_orders(client, user, make_user):
    names = ["Alpha", "alphabet", "beta", "100%_sure", "100 percent"]
    ids = [create_agent(client, user, name=name)["id"] for name in names]
    create_agent(client, make_user(), name="alpha of another user")
    client.delete(agent_url(ids[2]), headers=user.headers)

    def listed(**params):
        r = client.get(AGENTS, query_string=params, headers=user.headers)
        assert r.status_code == 200
        return [a["name"] for a in r.json["data"]]

    assert listed() == ["Alpha", "alphabet", "100%_sure", "100 percent"]
    assert listed(order="desc") == ["100 percent", "100%_sure", "alphabet", "Alpha"]
    assert listed(q="ALPHA") == ["Alpha", "alphabet"]
    assert listed(q="%_") == ["100%_sure"]  # LIKE wildcards match only themselves
    assert listed(q="beta") == []  # deleted


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "many"}, {"order": "up"}, {"cursor": "!!"}, {"q": ""}],
)
def test_invalid_list_arguments_are_422(client, user, params):
    r = client.get(AGENTS, query_string=params, headers=user.headers)
    assert r.status_code == 422 and set(r.json["errors"]) == set(params)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_walking_250_agents_in_pages_sees_each_once(client, db, make_user, order):
    user, other = make_user(), make_user()
    db.add_all(
        Agent(user_id=owner.id, name=f"bulk-{i:03}", provider="instant", model="instant")
        for i in range(250)
        for owner in (user, other)
    )
    db.commit()
    rows = db.execute(select(Agent.id, Agent.name).where(Agent.user_id == user.id)).all()
    deleted = db.get(Agent, next(row_id for row_id, name in rows if name == "bulk-150"))
    deleted.deleted_at = utcnow()
    db.commit()
    live = {row_id: name for row_id, name in rows if row_id != deleted.id}
    expected = sorted(live, reverse=order == "desc")

    for limit in (100, 7):
        seen = [a["id"] for a in walk(client, user, AGENTS, limit=limit, order=order)]
        assert seen == expected
    filtered = [a["id"] for a in walk(client, user, AGENTS, limit=10, q="BULK-1", order=order)]
    assert filtered == [row_id for row_id in expected if live[row_id].startswith("bulk-1")]
    assert len(filtered) == 99  # bulk-100 to bulk-199 but the deleted one


def test_huge_or_unknown_ids_are_404(client, user):
    for agent_id in (10**30, 2**63, 0, 999_999_999):
        assert client.get(agent_url(agent_id), headers=user.headers).status_code == 404


def test_deleting_an_agent_keeps_its_row_and_history(client, db, user):
    agent = create_agent(client, user, name="historian")
    session = ChatSession(user_id=user.id, agent_id=agent["id"], title="kept")
    db.add(session)
    db.commit()

    assert client.delete(agent_url(agent["id"]), headers=user.headers).status_code == 204
    db.rollback()
    row = db.get(Agent, agent["id"])
    assert row is not None and row.deleted_at is not None and row.name == "historian"
    assert db.get(ChatSession, session.id).agent_id == agent["id"]


def test_agents_need_a_token(client):
    assert client.get(AGENTS).status_code == 401
    assert client.post(AGENTS, json={"name": "x"}).status_code == 401
