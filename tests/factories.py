"""Creating agents and rooms through the API, for tests that need some."""

from __future__ import annotations

import itertools

AGENTS = "/api/v1/agents"
ROOMS = "/api/v1/rooms"

_names = itertools.count()


def create_agent(client, user, **fields) -> dict:
    fields.setdefault("name", f"agent-{next(_names)}")
    r = client.post(AGENTS, json=fields, headers=user.headers)
    assert r.status_code == 201, r.json
    return r.json


def create_room(client, user, *, agents=(), **fields) -> dict:
    """A room of ``user``; ``agents`` (agent dicts) are put in it in that order."""
    fields.setdefault("name", f"room-{next(_names)}")
    r = client.post(ROOMS, json=fields, headers=user.headers)
    assert r.status_code == 201, r.json
    for agent in agents:
        added = client.post(
            f"{ROOMS}/{r.json['id']}/agents", json={"agent_id": agent["id"]}, headers=user.headers
        )
        assert added.status_code == 201, added.json
    return client.get(f"{ROOMS}/{r.json['id']}", headers=user.headers).json


def walk(client, user, url, **params) -> list[dict]:
    """Every item of a paginated list, following next_cursor page by page."""
    items, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, query_string=query, headers=user.headers)
        assert r.status_code == 200, r.json
        assert len(r.json["data"]) <= query.get("limit", 20)
        items += r.json["data"]
        if not r.json["has_more"]:
            assert r.json["next_cursor"] is None
            return items
        cursor = r.json["next_cursor"]
