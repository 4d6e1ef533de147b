"""Rooms, their orchestration, membership by agent id, ownership, and the OpenAPI document."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from models import ChatSession, Room
from models.providers import LOCAL_MODEL
from tests.factories import AGENTS, ROOMS, create_agent, create_room, walk

DEFAULT_ORCHESTRATION = {
    "mode": "sequential",
    "max_rounds": 1,
    "selector_agent_id": None,
    "selector_provider": None,
    "selector_model": None,
    "default_agent_id": None,
}


def room_url(room_id):
    return f"{ROOMS}/{room_id}"


def members_url(room_id, agent_id=None):
    return f"{ROOMS}/{room_id}/agents" + (f"/{agent_id}" if agent_id is not None else "")


def member_ids(client, user, room_id):
    room = client.get(room_url(room_id), headers=user.headers).json
    assert [m["position"] for m in room["agents"]] == list(range(len(room["agents"])))
    return [m["agent_id"] for m in room["agents"]]


def orchestrate(client, user, room_id, **orchestration):
    return client.patch(
        room_url(room_id), json={"orchestration": orchestration}, headers=user.headers
    )


# Rooms


def test_a_name_is_enough_for_a_room(client, user):
    r = client.post(ROOMS, json={"name": " crew "}, headers=user.headers)
    assert r.status_code == 201
    room = r.json
    assert room | {"id": 0, "created_at": 0, "updated_at": 0} == {
        "id": 0,
        "name": "crew",
        "description": "",
        "instructions": "",
        "orchestration": DEFAULT_ORCHESTRATION,
        "metadata": {},
        "agents": [],
        "created_at": 0,
        "updated_at": 0,
    }


def test_crud(client, user):
    body = {
        "name": "release crew",
        "description": "Writes the notes.",
        "instructions": "Keep it short.",
        "orchestration": {"mode": "round_robin", "max_rounds": 4},
        "metadata": {"sprint": 12},
    }
    created = client.post(ROOMS, json=body, headers=user.headers).json
    assert created["orchestration"] == DEFAULT_ORCHESTRATION | body["orchestration"]
    assert created["instructions"] == "Keep it short." and created["metadata"] == {"sprint": 12}
    url = room_url(created["id"])
    assert client.get(url, headers=user.headers).json == created

    r = client.patch(url, json={"instructions": "", "name": "crew"}, headers=user.headers)
    assert r.status_code == 200
    assert r.json["instructions"] == "" and r.json["name"] == "crew"
    assert r.json["orchestration"] == created["orchestration"]
    assert client.get(url, headers=user.headers).json == r.json
    assert [room["id"] for room in walk(client, user, ROOMS)] == [created["id"]]

    assert client.delete(url, headers=user.headers).status_code == 204
    for method in ("get", "patch", "delete"):
        r = getattr(client, method)(url, json={}, headers=user.headers)
        assert r.status_code == 404 and r.json["message"] == f"Room {created['id']} not found."
    assert walk(client, user, ROOMS) == []


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": 7}, {"name"}),
        ({"description": "x" * 2001}, {"description"}),
        ({"instructions": "x" * (32 * 1024 + 1)}, {"instructions"}),
        ({"metadata": {"k": "x" * 5000}}, {"metadata"}),
        ({"metadata": "tags"}, {"metadata"}),
        ({"agents": []}, {"agents"}),
        ({"id": 1}, {"id"}),
        ({"user_id": 1}, {"user_id"}),
        ({"updated_at": "2030-01-01T00:00:00Z"}, {"updated_at"}),
        ({"mode": "mention"}, {"mode"}),
        ({"orchestration": None}, {"orchestration"}),
        ({"orchestration": "mention"}, {"orchestration"}),
        ({"orchestration": {"mode": "chaos"}}, {"orchestration"}),
        ({"orchestration": {"max_rounds": 0}}, {"orchestration"}),
        ({"orchestration": {"max_rounds": 21}}, {"orchestration"}),
        ({"orchestration": {"max_rounds": "3"}}, {"orchestration"}),
        ({"orchestration": {"speed": 1}}, {"orchestration"}),
        ({"orchestration": {"default_agent_id": 1}}, {"orchestration"}),
        ({"orchestration": {"mode": "mention", "selector_model": "x"}}, {"orchestration"}),
        ({"orchestration": {"mode": "supervisor", "selector_provider": "no"}}, {"orchestration"}),
        ({"orchestration": {"mode": "supervisor", "selector_model": "gpt"}}, {"orchestration"}),
        ({"orchestration": {"mode": "supervisor", "selector_agent_id": 0}}, {"orchestration"}),
        ({"orchestration": {"mode": "supervisor", "selector_agent_id": 10**6}}, {"orchestration"}),
        ({"orchestration": {"mode": "mention", "default_agent_id": 10**6}}, {"orchestration"}),
    ],
)
def test_invalid_create_is_422_and_writes_nothing(client, user, body, errors):
    if "name" not in errors:
        body = {"name": "valid", **body}
    r = client.post(ROOMS, json=body, headers=user.headers)
    assert r.status_code == 422 and r.json["code"] == "validation_error"
    assert set(r.json["errors"]) == errors, r.json
    assert walk(client, user, ROOMS) == []


@pytest.mark.parametrize(
    "body",
    [
        {"id": 5},
        {"user_id": 5},
        {"created_at": "2030-01-01T00:00:00Z"},
        {"deleted_at": None},
        {"agents": [{"agent_id": 1}]},
        {"name": "renamed", "orchestration": {"max_rounds": 99}},
        {"name": "renamed", "orchestration": {"mode": "supervisor", "selector_model": "nope"}},
    ],
)
def test_invalid_patch_is_422_and_changes_nothing(client, user, body):
    room = create_room(client, user, agents=[create_agent(client, user)])
    r = client.patch(room_url(room["id"]), json=body, headers=user.headers)
    assert r.status_code == 422 and r.json["code"] == "validation_error"
    assert client.get(room_url(room["id"]), headers=user.headers).json == room


def test_rooms_list_filters_by_name_and_pages(client, user, make_user):
    ids = [create_room(client, user, name=f"Room {i:02}")["id"] for i in range(25)]
    create_room(client, make_user(), name="Room of someone else")
    client.delete(room_url(ids[3]), headers=user.headers)
    live = [room_id for room_id in ids if room_id != ids[3]]
    for order in ("asc", "desc"):
        seen = [r["id"] for r in walk(client, user, ROOMS, limit=10, order=order)]
        assert seen == sorted(live, reverse=order == "desc")
    assert [r["name"] for r in walk(client, user, ROOMS, q="room 1", limit=4)] == [
        f"Room {i}" for i in range(10, 20)
    ]


# Orchestration


def test_supervisor_defaults_to_the_servers_default_selector_model(client, user, settings):
    room = create_room(client, user, orchestration={"mode": "supervisor", "max_rounds": 5})
    assert room["orchestration"] == DEFAULT_ORCHESTRATION | {
        "mode": "supervisor",
        "max_rounds": 5,
        "selector_provider": settings.default_provider,
        "selector_model": LOCAL_MODEL,
    }


def test_supervisor_selector_is_an_agent_or_a_model(client, user, make_user):
    selector = create_agent(client, user)
    room = create_room(client, user, orchestration={"mode": "supervisor"})
    rid = room["id"]

    r = orchestrate(client, user, rid, selector_agent_id=selector["id"])
    assert r.status_code == 200
    assert r.json["orchestration"] | {"max_rounds": 1} == DEFAULT_ORCHESTRATION | {
        "mode": "supervisor",
        "selector_agent_id": selector["id"],
    }
    # A selector model replaces the selector agent; a provider alone brings its default model.
    r = orchestrate(client, user, rid, selector_provider="instant")
    assert r.json["orchestration"]["selector_agent_id"] is None
    assert (
        r.json["orchestration"]["selector_provider"],
        r.json["orchestration"]["selector_model"],
    ) == (
        "instant",
        "instant",
    )
    r = orchestrate(client, user, rid, selector_model="judge")
    assert r.json["orchestration"]["selector_model"] == "judge"
    # Clearing the model falls back to the default selector model.
    r = orchestrate(client, user, rid, selector_provider=None, selector_model=None)
    assert r.json["orchestration"]["selector_provider"] == "local"
    assert r.json["orchestration"]["selector_model"] == LOCAL_MODEL

    # Both at once, someone else's agent, a deleted agent: field errors, nothing changes.
    before = client.get(room_url(rid), headers=user.headers).json
    foreign = create_agent(client, make_user())
    deleted = create_agent(client, user)
    client.delete(f"{AGENTS}/{deleted['id']}", headers=user.headers)
    for orchestration, message in [
        ({"selector_agent_id": selector["id"], "selector_model": "m"}, "not both"),
        ({"selector_agent_id": foreign["id"]}, f"Agent {foreign['id']} not found."),
        ({"selector_agent_id": deleted["id"]}, f"Agent {deleted['id']} not found."),
    ]:
        r = orchestrate(client, user, rid, **orchestration)
        assert r.status_code == 422
        assert message in r.json["errors"]["orchestration"]["selector_agent_id"][0]
    assert client.get(room_url(rid), headers=user.headers).json == before


def test_patch_merges_orchestration_and_drops_options_of_a_previous_mode(client, user):
    speaker = create_agent(client, user)
    room = create_room(
        client,
        user,
        orchestration={"mode": "mention", "default_agent_id": speaker["id"], "max_rounds": 2},
    )
    rid = room["id"]
    assert room["orchestration"]["default_agent_id"] == speaker["id"]

    r = orchestrate(client, user, rid, max_rounds=3)
    assert r.json["orchestration"]["mode"] == "mention"
    assert r.json["orchestration"]["default_agent_id"] == speaker["id"]
    # An option of another mode is an error...
    r = orchestrate(client, user, rid, selector_agent_id=speaker["id"])
    assert r.status_code == 422
    assert "Only for mode 'supervisor'" in r.json["errors"]["orchestration"]["selector_agent_id"][0]
    # ...but one left over from the previous mode is dropped.
    r = orchestrate(client, user, rid, mode="round_robin")
    assert r.json["orchestration"] == DEFAULT_ORCHESTRATION | {
        "mode": "round_robin",
        "max_rounds": 3,
    }
    r = orchestrate(client, user, rid, mode="mention", default_agent_id=speaker["id"])
    r = orchestrate(client, user, rid, default_agent_id=None)
    assert r.json["orchestration"]["default_agent_id"] is None


# Membership


def test_membership_order_insert_move_and_remove(client, user):
    a, b, c, d = (create_agent(client, user) for _ in range(4))
    room = create_room(client, user, agents=[a, b])
    rid = room["id"]
    assert [(m["agent_id"], m["position"]) for m in room["agents"]] == [(a["id"], 0), (b["id"], 1)]
    assert room["agents"][0]["agent"] == {
        "id": a["id"],
        "name": a["name"],
        "provider": "local",
        "model": LOCAL_MODEL,
    }

    r = client.post(
        members_url(rid), json={"agent_id": c["id"], "position": 0}, headers=user.headers
    )
    assert r.status_code == 201
    assert r.json | {"created_at": None} == {
        "room_id": rid,
        "agent_id": c["id"],
        "position": 0,
        "created_at": None,
        "agent": {"id": c["id"], "name": c["name"], "provider": "local", "model": LOCAL_MODEL},
    }
    assert member_ids(client, user, rid) == [c["id"], a["id"], b["id"]]
    # A position past the end means last.
    r = client.post(
        members_url(rid), json={"agent_id": d["id"], "position": 31}, headers=user.headers
    )
    assert r.json["position"] == 3
    assert member_ids(client, user, rid) == [c["id"], a["id"], b["id"], d["id"]]

    r = client.patch(members_url(rid, d["id"]), json={"position": 1}, headers=user.headers)
    assert r.status_code == 200 and r.json["position"] == 1
    assert member_ids(client, user, rid) == [c["id"], d["id"], a["id"], b["id"]]
    r = client.patch(members_url(rid, c["id"]), json={"position": 30}, headers=user.headers)
    assert r.json["position"] == 3
    assert member_ids(client, user, rid) == [d["id"], a["id"], b["id"], c["id"]]

    assert client.delete(members_url(rid, a["id"]), headers=user.headers).status_code == 204
    assert member_ids(client, user, rid) == [d["id"], b["id"], c["id"]]
    # The agent itself stays, and can come back.
    assert client.get(f"{AGENTS}/{a['id']}", headers=user.headers).status_code == 200
    for method in ("patch", "delete"):
        r = getattr(client, method)(
            members_url(rid, a["id"]), json={"position": 0}, headers=user.headers
        )
        assert (
            r.status_code == 404 and r.json["message"] == f"Agent {a['id']} is not in room {rid}."
        )
    client.post(members_url(rid), json={"agent_id": a["id"]}, headers=user.headers)
    assert member_ids(client, user, rid) == [d["id"], b["id"], c["id"], a["id"]]


def test_membership_list_pages_in_speaking_order(client, user):
    agents = [create_agent(client, user) for _ in range(7)]
    room = create_room(client, user, agents=agents)
    rid = room["id"]
    client.patch(members_url(rid, agents[6]["id"]), json={"position": 0}, headers=user.headers)
    expected = [agents[6]["id"]] + [a["id"] for a in agents[:6]]
    for limit in (1, 2, 3, 100):
        seen = walk(client, user, members_url(rid), limit=limit)
        assert [m["agent_id"] for m in seen] == expected
        assert [m["position"] for m in seen] == list(range(7))
    desc = walk(client, user, members_url(rid), limit=3, order="desc")
    assert [m["agent_id"] for m in desc] == expected[::-1]


def test_assigning_an_agent_twice_is_409(client, user):
    agent = create_agent(client, user)
    room = create_room(client, user, agents=[agent])
    r = client.post(members_url(room["id"]), json={"agent_id": agent["id"]}, headers=user.headers)
    assert r.status_code == 409
    assert r.json == {
        "status": 409,
        "code": "agent_in_room",
        "message": f"Agent {agent['id']} is already in room {room['id']}.",
    }
    assert member_ids(client, user, room["id"]) == [agent["id"]]


def test_a_room_holds_at_most_32_agents(client, user):
    agents = [create_agent(client, user) for _ in range(33)]
    room = create_room(client, user, agents=agents[:32])
    r = client.post(
        members_url(room["id"]), json={"agent_id": agents[32]["id"]}, headers=user.headers
    )
    assert r.status_code == 409 and r.json["code"] == "room_full"
    assert len(member_ids(client, user, room["id"])) == 32


def test_assigning_a_missing_deleted_or_foreign_agent_is_404(client, user, make_user):
    room = create_room(client, user)
    deleted = create_agent(client, user)
    client.delete(f"{AGENTS}/{deleted['id']}", headers=user.headers)
    foreign = create_agent(client, make_user())
    for agent_id in (deleted["id"], foreign["id"], 10**9):
        r = client.post(members_url(room["id"]), json={"agent_id": agent_id}, headers=user.headers)
        assert r.status_code == 404 and r.json["message"] == f"Agent {agent_id} not found."
    assert member_ids(client, user, room["id"]) == []


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("post", {}, "agent_id"),
        ("post", {"agent_id": "1"}, "agent_id"),
        ("post", {"agent_id": 1.5}, "agent_id"),
        ("post", {"agent_id": 10**20}, "agent_id"),
        ("post", {"agent_id": None}, "agent_id"),
        ("post", {"agent_id": 1, "position": -1}, "position"),
        ("post", {"agent_id": 1, "position": 32}, "position"),
        ("post", {"agent_id": 1, "role": "lead"}, "role"),
        ("patch", {}, "position"),
        ("patch", {"position": "0"}, "position"),
        ("patch", {"position": 1, "agent_id": 2}, "agent_id"),
        ("patch", {"position": 1, "room_id": 2}, "room_id"),
    ],
)
def test_invalid_membership_requests_are_422(client, user, method, body, field):
    a, b = create_agent(client, user), create_agent(client, user)
    room = create_room(client, user, agents=[a, b])
    url = members_url(room["id"], a["id"] if method == "patch" else None)
    r = getattr(client, method)(url, json=body, headers=user.headers)
    assert r.status_code == 422 and field in r.json["errors"], r.json
    assert member_ids(client, user, room["id"]) == [a["id"], b["id"]]


# Deletion keeps history


def test_deleting_an_agent_takes_it_out_of_rooms_and_their_options(client, user):
    a, b, c = (create_agent(client, user) for _ in range(3))
    crowded = create_room(client, user, agents=[a, b, c])
    supervised = create_room(
        client, user, agents=[b], orchestration={"mode": "supervisor", "selector_agent_id": b["id"]}
    )
    mentioned = create_room(
        client, user, orchestration={"mode": "mention", "default_agent_id": b["id"]}
    )

    assert client.delete(f"{AGENTS}/{b['id']}", headers=user.headers).status_code == 204
    assert member_ids(client, user, crowded["id"]) == [a["id"], c["id"]]
    assert member_ids(client, user, supervised["id"]) == []
    supervised = client.get(room_url(supervised["id"]), headers=user.headers).json
    assert supervised["orchestration"]["selector_agent_id"] is None
    assert supervised["orchestration"]["selector_model"] == LOCAL_MODEL
    mentioned = client.get(room_url(mentioned["id"]), headers=user.headers).json
    assert mentioned["orchestration"] == DEFAULT_ORCHESTRATION | {"mode": "mention"}
    # Their rooms stay valid: an unrelated change is accepted.
    r = client.patch(room_url(supervised["id"]), json={"name": "still fine"}, headers=user.headers)
    assert r.status_code == 200


def test_deleting_a_room_keeps_its_row_and_history(client, db, user):
    agent = create_agent(client, user)
    room = create_room(client, user, agents=[agent])
    session = ChatSession(user_id=user.id, room_id=room["id"], title="kept")
    db.add(session)
    db.commit()

    assert client.delete(room_url(room["id"]), headers=user.headers).status_code == 204
    for method, url, body in [
        ("get", members_url(room["id"]), None),
        ("post", members_url(room["id"]), {"agent_id": agent["id"]}),
        ("patch", members_url(room["id"], agent["id"]), {"position": 0}),
        ("delete", members_url(room["id"], agent["id"]), None),
    ]:
        r = getattr(client, method)(url, json=body, headers=user.headers)
        assert r.status_code == 404, (method, url)
    db.rollback()
    assert db.get(Room, room["id"]).deleted_at is not None
    assert db.get(ChatSession, session.id).room_id == room["id"]
    # The agent is not touched.
    assert client.get(f"{AGENTS}/{agent['id']}", headers=user.headers).status_code == 200


# Ownership


def test_another_users_agents_rooms_and_memberships_are_404(client, make_user):
    owner, intruder = make_user(), make_user()
    agent = create_agent(client, owner)
    room = create_room(client, owner, agents=[agent])
    own_agent = create_agent(client, intruder)
    own_room = create_room(client, intruder)
    snapshot = [
        client.get(url, headers=owner.headers).json
        for url in (f"{AGENTS}/{agent['id']}", room_url(room["id"]))
    ]

    attempts = [
        ("get", f"{AGENTS}/{agent['id']}", None),
        ("patch", f"{AGENTS}/{agent['id']}", {"name": "mine now"}),
        ("delete", f"{AGENTS}/{agent['id']}", None),
        ("get", room_url(room["id"]), None),
        ("patch", room_url(room["id"]), {"name": "mine now"}),
        ("delete", room_url(room["id"]), None),
        ("get", members_url(room["id"]), None),
        ("post", members_url(room["id"]), {"agent_id": own_agent["id"]}),  # own agent, their room
        ("patch", members_url(room["id"], agent["id"]), {"position": 0}),
        ("delete", members_url(room["id"], agent["id"]), None),
        ("post", members_url(own_room["id"]), {"agent_id": agent["id"]}),  # their agent, own room
    ]
    for method, url, body in attempts:
        r = getattr(client, method)(url, json=body, headers=intruder.headers)
        assert r.status_code == 404, (method, url, r.json)
        assert r.json["code"] == "not_found"
    # Their agent cannot be named in one's own orchestration either.
    r = orchestrate(
        client, intruder, own_room["id"], mode="supervisor", selector_agent_id=agent["id"]
    )
    assert r.status_code == 422
    # Lists show only one's own, and nothing of the owner changed.
    assert [a["id"] for a in walk(client, intruder, AGENTS)] == [own_agent["id"]]
    assert [r["id"] for r in walk(client, intruder, ROOMS)] == [own_room["id"]]
    assert member_ids(client, intruder, own_room["id"]) == []
    assert snapshot == [
        client.get(url, headers=owner.headers).json
        for url in (f"{AGENTS}/{agent['id']}", room_url(room["id"]))
    ]


# OpenAPI

# Every endpoint, and the error statuses it documents.
ENDPOINTS = {
    ("/api/v1/agents", "post"): {"409", "422"},
    ("/api/v1/agents", "get"): {"422"},
    ("/api/v1/agents/{agent_id}", "get"): {"404"},
    ("/api/v1/agents/{agent_id}", "patch"): {"404", "409", "422"},
    ("/api/v1/agents/{agent_id}", "delete"): {"404"},
    ("/api/v1/rooms", "post"): {"409", "422"},  # 409: ROOMCAST_MAX_ROOMS_PER_USER
    ("/api/v1/rooms", "get"): {"422"},
    ("/api/v1/rooms/{room_id}", "get"): {"404"},
    ("/api/v1/rooms/{room_id}", "patch"): {"404", "422"},
    ("/api/v1/rooms/{room_id}", "delete"): {"404"},
    ("/api/v1/rooms/{room_id}/agents", "post"): {"404", "409", "422"},
    ("/api/v1/rooms/{room_id}/agents", "get"): {"404", "422"},
    ("/api/v1/rooms/{room_id}/agents/{agent_id}", "patch"): {"404", "422"},
    ("/api/v1/rooms/{room_id}/agents/{agent_id}", "delete"): {"404"},
}


def test_openapi_documents_every_endpoint_and_error_with_examples(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    for path in {path for path, _ in ENDPOINTS}:
        methods = set(spec["paths"][path]) - {"parameters"}
        assert methods == {method for p, method in ENDPOINTS if p == path}, path
    for (path, method), statuses in ENDPOINTS.items():
        operation = spec["paths"][path][method]
        assert operation["summary"], (path, method)
        errors = {code: r for code, r in operation["responses"].items() if code.startswith("4")}
        assert set(errors) == statuses, (path, method)
        for code, response in errors.items():
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Error"}
            examples = (
                [content["example"]]
                if "example" in content
                else [e["value"] for e in content["examples"].values()]
            )
            for example in examples:
                assert example["status"] == int(code) and example["code"] and example["message"]
                assert ("errors" in example) == (code == "422"), (path, method, code)

    schemas = spec["components"]["schemas"]
    for name in (
        "Agent",
        "AgentUpdate",
        "Room",
        "RoomUpdate",
        "Orchestration",
        "RoomAgent",
        "RoomAgentCreate",
        "RoomAgentUpdate",
        "AgentSummary",
    ):
        for field, prop in schemas[name]["properties"].items():
            documented = "example" in prop or "$ref" in prop or "allOf" in prop or "items" in prop
            assert documented, (name, field)
    assert schemas["Agent"]["properties"]["id"]["readOnly"] is True
    assert schemas["Orchestration"]["properties"]["mode"]["enum"] == [
        "sequential",
        "round_robin",
        "mention",
        "supervisor",
    ]


# Concurrency


def test_concurrent_requests_keep_names_and_membership_consistent(app, client, user):
    def run_all(requests):
        def send(request):
            method, url, body = request
            return getattr(app.test_client(), method)(url, json=body, headers=user.headers)

        with ThreadPoolExecutor(8) as pool:
            return [r.status_code for r in pool.map(send, requests)]

    codes = run_all([("post", AGENTS, {"name": "same"})] * 12)
    assert sorted(codes) == [201] + [409] * 11

    agents = [create_agent(client, user) for _ in range(10)]
    room = create_room(client, user)
    add = [("post", members_url(room["id"]), {"agent_id": a["id"]}) for a in agents]
    assert sorted(run_all(add * 2)) == [201] * 10 + [409] * 10
    assert sorted(member_ids(client, user, room["id"])) == [a["id"] for a in agents]

    # Deleting agents while they are being assigned again leaves none of them in the room.
    client.delete(members_url(room["id"], agents[0]["id"]), headers=user.headers)
    delete = [("delete", f"{AGENTS}/{a['id']}", None) for a in agents]
    codes = run_all([request for pair in zip(delete, add, strict=True) for request in pair])
    assert codes[::2] == [204] * 10 and set(codes[1::2]) <= {201, 404, 409}
    assert member_ids(client, user, room["id"]) == []
