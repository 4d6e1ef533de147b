from sqlalchemy import func, select

from models import Agent, Message, Room, Turn, utcnow
from tests.helpers import messages, post_turn, start_session, wait_done


def test_standalone_and_room_sessions_crud(client, user, make_agent, make_room):
    agent = make_agent(user)
    room = make_room(user, [agent])
    standalone = start_session(client, user, agent=agent, title="solo", metadata={"k": "v"})
    assert standalone["scope"] == "agent" and standalone["agent_id"] == agent.id
    assert standalone["room_id"] is None and standalone["multitask"] == "reject"
    in_room = start_session(client, user, room=room, multitask="enqueue")
    assert in_room["scope"] == "room" and in_room["room_id"] == room.id

    listed = client.get(f"/api/v1/agents/{agent.id}/sessions", headers=user.headers).json
    assert [s["id"] for s in listed["data"]] == [standalone["id"]]
    listed = client.get(f"/api/v1/rooms/{room.id}/sessions", headers=user.headers).json
    assert [s["id"] for s in listed["data"]] == [in_room["id"]]

    url = f"/api/v1/sessions/{standalone['id']}"
    r = client.patch(url, json={"title": "renamed", "multitask": "interrupt"}, headers=user.headers)
    assert (
        r.status_code == 200 and r.json["title"] == "renamed" and r.json["multitask"] == "interrupt"
    )
    assert client.get(url, headers=user.headers).json["title"] == "renamed"

    assert client.delete(url, headers=user.headers).status_code == 204
    assert client.get(url, headers=user.headers).status_code == 404
    listed = client.get(f"/api/v1/agents/{agent.id}/sessions", headers=user.headers).json
    assert listed["data"] == []


def test_scope_is_fixed_and_input_validated(client, user, make_agent, make_room):
    agent = make_agent(user)
    other = make_agent(user)
    session = start_session(client, user, agent=agent)
    url = f"/api/v1/sessions/{session['id']}"
    for body in (
        {"agent_id": other.id},
        {"room_id": 1},
        {"id": 5},
        {"created_at": "2020-01-01"},
        {"multitask": "sometimes"},
        {"title": "x" * 201},
        {"metadata": "nope"},
        {"metadata": {"big": "x" * 5000}},
    ):
        r = client.patch(url, json=body, headers=user.headers)
        assert r.status_code == 422, (body, r.json)
    after = client.get(url, headers=user.headers).json
    assert after == session
    r = client.post(
        f"/api/v1/agents/{agent.id}/sessions", json={"room_id": 3}, headers=user.headers
    )
    assert r.status_code == 422 and "room_id" in r.json["errors"]


def test_deleted_agent_or_room_blocks_new_work_but_keeps_history(
    client, user, make_agent, make_room, db, celery_worker
):
    agent = make_agent(user)
    room = make_room(user, [make_agent(user)])
    session = start_session(client, user, agent=agent)
    room_session = start_session(client, user, room=room)
    turn = post_turn(client, user, session["id"]).json
    wait_done(client, user, turn["id"])

    db.get(Agent, agent.id).deleted_at = utcnow()
    db.get(Room, room.id).deleted_at = utcnow()
    db.commit()

    for url in (f"/api/v1/agents/{agent.id}/sessions", f"/api/v1/rooms/{room.id}/sessions"):
        r = client.post(url, json={}, headers=user.headers)
        assert r.status_code == 409 and r.json["code"] in ("agent_deleted", "room_deleted")
    r = post_turn(client, user, session["id"])
    assert r.status_code == 409 and r.json["code"] == "agent_deleted"
    r = post_turn(client, user, room_session["id"])
    assert r.status_code == 409 and r.json["code"] == "room_deleted"

    # History stays readable.
    assert client.get(f"/api/v1/sessions/{session['id']}", headers=user.headers).status_code == 200
    assert len(messages(client, user, session["id"])) == 2
    listed = client.get(f"/api/v1/agents/{agent.id}/sessions", headers=user.headers)
    assert [s["id"] for s in listed.json["data"]] == [session["id"]]


def test_room_without_agents_takes_no_turns(client, user, make_room, make_agent):
    make_room(user, [make_agent(user)])  # another room's agents don't count
    room = make_room(user, [])
    session = start_session(client, user, room=room)
    r = post_turn(client, user, session["id"])
    assert r.status_code == 409 and r.json["code"] == "room_empty"
    assert (
        client.get(f"/api/v1/sessions/{session['id']}/turns", headers=user.headers).json["data"]
        == []
    )


def test_refused_turns_leave_the_session_as_it_was(
    client, user, make_user, make_agent, make_room, db
):
    """Refused for any reason, a POST writes nothing: no turn, no message, no session update."""
    agent = make_agent(user)
    busy = start_session(client, user, agent=agent)
    db.add(Turn(session_id=busy["id"], user_id=user.id, status="running", attempt=1))
    empty = start_session(client, user, room=make_room(user, []))
    gone = start_session(client, user, agent=make_agent(user))
    db.get(Agent, gone["agent_id"]).deleted_at = utcnow()
    db.commit()
    stranger = make_user()

    def state(session_id):
        session = client.get(f"/api/v1/sessions/{session_id}", headers=user.headers).json
        return session["updated_at"], db.scalar(
            select(func.count()).select_from(Message).where(Message.session_id == session_id)
        )

    for who, session_id, status, code in (
        (user, busy["id"], 409, "turn_active"),
        (user, empty["id"], 409, "room_empty"),
        (user, gone["id"], 409, "agent_deleted"),
        (stranger, busy["id"], 404, "not_found"),
    ):
        before = state(session_id)
        r = post_turn(client, who, session_id, "refused")
        assert r.status_code == status and r.json.get("code") == code, r.json
        assert state(session_id) == before


def test_another_users_sessions_are_404(client, make_user, make_agent, make_room):
    alice, bob = make_user(), make_user()
    agent, room = make_agent(alice), None
    room = make_room(alice, [agent])
    session = start_session(client, alice, agent=agent)
    turn = post_turn(client, alice, session["id"]).json
    for method, url, body in [
        ("post", f"/api/v1/agents/{agent.id}/sessions", {}),
        ("get", f"/api/v1/agents/{agent.id}/sessions", None),
        ("post", f"/api/v1/rooms/{room.id}/sessions", {}),
        ("get", f"/api/v1/rooms/{room.id}/sessions", None),
        ("get", f"/api/v1/sessions/{session['id']}", None),
        ("patch", f"/api/v1/sessions/{session['id']}", {"title": "mine"}),
        ("delete", f"/api/v1/sessions/{session['id']}", None),
        ("post", f"/api/v1/sessions/{session['id']}/turns", {"content": "hi"}),
        ("get", f"/api/v1/sessions/{session['id']}/turns", None),
        ("get", f"/api/v1/sessions/{session['id']}/messages", None),
        ("get", f"/api/v1/turns/{turn['id']}", None),
        ("post", f"/api/v1/turns/{turn['id']}/cancel", None),
    ]:
        r = getattr(client, method)(url, json=body, headers=bob.headers)
        assert r.status_code == 404, (method, url, r.status_code)
        assert r.json["code"] == "not_found"
    assert (
        client.get(f"/api/v1/sessions/{session['id']}", headers=alice.headers).json["title"] == ""
    )
