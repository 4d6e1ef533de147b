"""History reads: keyset pages in both directions, filtered by turn, edges included."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from models import ChatSession, Message, Turn
from tests.helpers import seed_turn


@pytest.fixture
def seeded(db, user, make_agent):
    """A session with 25 turns of 2 messages each, seeded directly."""
    agent = make_agent(user)
    session = ChatSession(user_id=user.id, agent_id=agent.id)
    db.add(session)
    db.flush()
    turns = []
    for i in range(25):
        turn = Turn(session_id=session.id, user_id=user.id, status="completed")
        db.add(turn)
        db.flush()
        db.add_all(
            [
                Message(
                    session_id=session.id, turn_id=turn.id, step=0, role="user", content=f"q{i}"
                ),
                Message(
                    session_id=session.id,
                    turn_id=turn.id,
                    step=1,
                    role="assistant",
                    agent_id=agent.id,
                    content=f"a{i}",
                ),
            ]
        )
        turns.append(turn.id)
    db.commit()
    return session.id, turns


def _walk(client, user, url, **params):
    seen, cursor, pages = [], None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, query_string=query, headers=user.headers)
        assert r.status_code == 200, r.json
        page = r.json
        assert len(page["data"]) <= params.get("limit", 20)
        seen += page["data"]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen, pages
        assert page["next_cursor"]
        cursor = page["next_cursor"]


def test_pages_in_both_directions(client, user, seeded):
    session_id, _ = seeded
    url = f"/api/v1/sessions/{session_id}/messages"
    forward, pages = _walk(client, user, url, limit=7)
    assert pages == 8  # 50 messages: 7 full pages and one of 1
    assert [m["content"] for m in forward[:4]] == ["q0", "a0", "q1", "a1"]
    ids = [m["id"] for m in forward]
    assert ids == sorted(ids) and len(set(ids)) == 50
    backward, _ = _walk(client, user, url, limit=7, order="desc")
    assert [m["id"] for m in backward] == ids[::-1]
    exact, pages = _walk(client, user, url, limit=50)
    assert pages == 1 and len(exact) == 50


def test_filter_by_turn(client, user, seeded):
    session_id, turns = seeded
    url = f"/api/v1/sessions/{session_id}/messages"
    data, _ = _walk(client, user, url, turn_id=turns[3], limit=1)
    assert [(m["role"], m["content"], m["step"]) for m in data] == [
        ("user", "q3", 0),
        ("assistant", "a3", 1),
    ]
    assert all(m["turn_id"] == turns[3] for m in data)
    r = client.get(url, query_string={"turn_id": 999999}, headers=user.headers)
    assert r.status_code == 200 and r.json == {"data": [], "has_more": False, "next_cursor": None}


def test_turn_list_is_newest_first(client, user, seeded):
    session_id, turns = seeded
    url = f"/api/v1/sessions/{session_id}/turns"
    data, _ = _walk(client, user, url, limit=10)
    assert [t["id"] for t in data] == turns[::-1]
    assert all(len(t["message_ids"]) == 1 and t["input_message_id"] for t in data)
    data, _ = _walk(client, user, url, limit=10, order="asc")
    assert [t["id"] for t in data] == turns


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"order": "sideways"},
        {"cursor": "%%%"},
        {"cursor": "bm90LWpzb24"},
        {"cursor": "WyJ4Il0"},
        {"turn_id": "abc"},
    ],
)
def test_bad_page_arguments_are_422(client, user, seeded, params):
    session_id, _ = seeded
    r = client.get(
        f"/api/v1/sessions/{session_id}/messages", query_string=params, headers=user.headers
    )
    assert r.status_code == 422, (params, r.json)
    assert r.json["code"] == "validation_error" and r.json["errors"]


def test_empty_session_history(client, user, make_agent):
    from tests.helpers import start_session

    session = start_session(client, user, agent=make_agent(user))
    r = client.get(f"/api/v1/sessions/{session['id']}/messages", headers=user.headers)
    assert r.json == {"data": [], "has_more": False, "next_cursor": None}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sessions/{big}/messages",
        "/api/v1/turns/{big}",
        "/api/v1/sessions/{big}",
        "/api/v1/auth/tokens/{big}",
    ],
)
def test_ids_beyond_64_bits_are_404(client, user, path):
    r = client.get(path.format(big=2**64), headers=user.headers)
    assert r.status_code in (404, 405) and r.json["code"] in ("not_found", "method_not_allowed")


def test_query_ids_beyond_64_bits_are_422(client, user, seeded):
    session_id, _ = seeded
    r = client.get(
        f"/api/v1/sessions/{session_id}/messages",
        query_string={"turn_id": 2**64},
        headers=user.headers,
    )
    assert r.status_code == 422 and "turn_id" in r.json["errors"]


def test_page_json_is_exact(client, db, user, make_agent, cursor_of):
    """Every field of a message, as the page's bytes: key order, escapes and timestamps."""
    agent = make_agent(user)
    session_id = seed_turn(
        db,
        user,
        agent,
        [
            {
                "role": "user",
                "content": "Où est la bibliothèque ? 📚",
                "meta": {"label": "q", "n": [1, 2.5, None]},
                "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            },
            {
                "role": "assistant",
                "agent_id": agent.id,
                "visibility": "private",
                "tool_calls": [{"id": "c1", "name": "search", "arguments": {"q": "bibliothèque"}}],
                "created_at": datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC),
            },
            {
                "role": "tool",
                "agent_id": agent.id,
                "visibility": "private",
                "content": '{"hits": 0}',
                "tool_call_id": "c1",
                "created_at": datetime(2026, 1, 2, 3, 4, 6, 123456, tzinfo=UTC),
            },
        ],
    )
    asked, called, answered = db.scalars(
        select(Message).where(Message.session_id == session_id).order_by(Message.step)
    )
    turn_id = asked.turn_id

    r = client.get(
        f"/api/v1/sessions/{session_id}/messages", query_string={"limit": 2}, headers=user.headers
    )
    assert r.status_code == 200 and r.mimetype == "application/json"
    expected = (
        '{"data":['
        f'{{"agent_id":null,"content":"O\\u00f9 est la biblioth\\u00e8que ? \\ud83d\\udcda",'
        f'"created_at":"2026-01-02T03:04:05+00:00","id":{asked.id},'
        '"metadata":{"label":"q","n":[1,2.5,null]},"role":"user",'
        f'"session_id":{session_id},"step":0,"tool_call_id":null,"tool_calls":null,'
        f'"turn_id":{turn_id},"visibility":"shared"}},'
        f'{{"agent_id":{agent.id},"content":"","created_at":"2026-01-02T03:04:05.000600+00:00",'
        f'"id":{called.id},"metadata":{{}},"role":"assistant","session_id":{session_id},'
        '"step":1,"tool_call_id":null,"tool_calls":[{"arguments":{"q":"biblioth\\u00e8que"},'
        f'"id":"c1","name":"search"}}],"turn_id":{turn_id},"visibility":"private"}}'
        f'],"has_more":true,"next_cursor":"{cursor_of([called.id])}"}}\n'
    )
    assert r.get_data(as_text=True) == expected

    r = client.get(
        f"/api/v1/sessions/{session_id}/messages",
        query_string={"limit": 2, "cursor": cursor_of([called.id])},
        headers=user.headers,
    )
    assert r.json == {
        "data": [
            {
                "id": answered.id,
                "session_id": session_id,
                "turn_id": turn_id,
                "step": 2,
                "role": "tool",
                "agent_id": agent.id,
                "visibility": "private",
                "content": '{"hits": 0}',
                "tool_calls": None,
                "tool_call_id": "c1",
                "metadata": {},
                "created_at": "2026-01-02T03:04:06.123456+00:00",
            }
        ],
        "has_more": False,
        "next_cursor": None,
    }


def test_newest_first_with_a_turn_filter(client, user, seeded):
    session_id, turns = seeded
    url = f"/api/v1/sessions/{session_id}/messages"
    data, pages = _walk(client, user, url, turn_id=turns[-1], order="desc", limit=1)
    assert [(m["content"], m["step"]) for m in data] == [("a24", 1), ("q24", 0)]
    assert pages == 2


def test_a_page_past_the_end_is_empty(client, user, seeded, cursor_of):
    session_id, _ = seeded
    url = f"/api/v1/sessions/{session_id}/messages"
    last = client.get(url, query_string={"order": "desc", "limit": 1}, headers=user.headers)
    for order, cursor in [("asc", last.json["data"][0]["id"]), ("desc", 1)]:
        r = client.get(
            url,
            query_string={"order": order, "cursor": cursor_of([cursor])},
            headers=user.headers,
        )
        assert r.status_code == 200
        assert r.json == {"data": [], "has_more": False, "next_cursor": None}


@pytest.mark.parametrize("params", [{}, {"turn_id": 1}, {"cursor": [1]}, {"order": "desc"}])
def test_history_of_a_session_not_ours_is_404(client, user, make_user, seeded, params, cursor_of):
    """Another user's, a deleted or a missing session: with messages or none, any arguments."""
    if "cursor" in params:
        params = {"cursor": cursor_of(params["cursor"])}
    session_id, _ = seeded
    url = "/api/v1/sessions/{}/messages"
    stranger = make_user()
    r = client.get(url.format(session_id), query_string=params, headers=stranger.headers)
    assert r.status_code == 404 and r.json == {
        "status": 404,
        "code": "not_found",
        "message": f"ChatSession {session_id} not found.",
    }
    assert client.delete(f"/api/v1/sessions/{session_id}", headers=user.headers).status_code == 204
    for missing in (session_id, session_id + 1000, 0):
        r = client.get(url.format(missing), query_string=params, headers=user.headers)
        assert r.status_code == 404 and r.json["message"] == f"ChatSession {missing} not found."


def test_a_cursor_of_another_list_is_422_but_not_ours_404(
    client, user, make_user, seeded, cursor_of
):
    session_id, _ = seeded
    url = f"/api/v1/sessions/{session_id}/messages"
    two_keys = {"cursor": cursor_of([1, 2])}
    r = client.get(url, query_string=two_keys, headers=user.headers)
    assert r.status_code == 422 and r.json["errors"] == {
        "cursor": ["Not a valid cursor; pass back next_cursor unchanged."]
    }
    r = client.get(url, query_string=two_keys, headers=make_user().headers)
    assert r.status_code == 404
