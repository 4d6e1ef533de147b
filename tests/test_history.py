"""History reads: keyset pages in both directions, filtered by turn, edges included."""

import pytest

from models import ChatSession, Message, Turn


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
