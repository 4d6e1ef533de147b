"""Server-sent event streams of turns and sessions: order, resume, tokens, cleanup, ownership."""

import threading
import time
from datetime import timedelta

import pytest

from models import lifecycle
from models.turn_events import turn_events
from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
from tests.helpers import post_turn, start_session, wait_done
from tests.sse_client import open_stream

pytestmark = pytest.mark.usefixtures("celery_worker")


def turn_path(turn_id: int) -> str:
    return f"/api/v1/turns/{turn_id}/events"


def session_path(session_id: int) -> str:
    return f"/api/v1/sessions/{session_id}/events"


def held_turn(held_client, user, session_id: int, content: str = "hello", **body) -> int:
    """A turn accepted and not sent to any worker (the held-tasks app): the test sends it
    when it is ready (dispatch)."""
    response = post_turn(held_client, user, session_id, content, **body)
    assert response.status_code == 202, response.json
    return response.json["id"]


def dispatch(turn_id: int) -> None:
    """Send a held turn to the test's worker."""
    from models.tasking import EXECUTE_TURN, TURNS_QUEUE
    from worker import app as celery_app

    celery_app.send_task(EXECUTE_TURN, args=[turn_id], queue=TURNS_QUEUE)


def names(events) -> list[str]:
    return [e.name for e in events]


def comparable(events) -> list[tuple]:
    return [(e.name, e.data, e.id) for e in events]


def tool_agent(make_agent, user, name="ann"):
    return make_agent(
        user,
        name=name,
        provider=FAKE_PROVIDER,
        model=FAKE_MODEL,
        system_prompt=f"You are {name}.",
        tools=["search"],
    )


def test_a_standalone_turn_streams_its_lifecycle_in_order(
    client, held_client, settings, user, make_agent
):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])
    stream = open_stream(client, user, turn_path(turn_id))
    first = next(stream)
    assert (first.name, first.data) == (
        "status",
        {"turn_id": turn_id, "status": "queued", "attempt": 0},
    )
    assert stream.retry == 2000
    dispatch(turn_id)
    events = [first, *stream.rest()]  # the stream closes after the end
    assert names(events) == [
        "status",  # queued
        "message",  # the user's
        "status",  # running
        "plan",
        "message",  # the reply
        "usage",
        "progress",
        "status",  # completed
        "end",
    ]
    assert all(e.data["turn_id"] == turn_id and e.id for e in events)
    user_message, reply = (e.data for e in events if e.name == "message")
    assert (user_message["role"], user_message["content"]) == ("user", "hello")
    assert reply["role"] == "assistant" and reply["visibility"] == "shared"
    assert events[-2].data["status"] == "completed"
    end = events[-1].data
    turn = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
    assert {k: v for k, v in end.items() if k != "turn_id"} == turn
    # Resuming after the end: nothing more to send, and an EventSource stops reconnecting.
    response = client.get(
        turn_path(turn_id), headers={**user.headers, "Last-Event-ID": events[-1].id}
    )
    assert response.status_code == 204


def room_turn_with_a_tool_call(client, user, make_agent, make_room, fake_llm) -> tuple[int, int]:
    """A completed sequential room turn: ann searches, then answers; bob answers."""
    fake_llm.tool_call("search", {"query": "budget"}, call_id="call_1").reply("Ann found it.")
    agents = [tool_agent(make_agent, user, "ann"), make_agent(user, "bob")]
    session = start_session(client, user, room=make_room(user, agents, mode="sequential"))
    turn_id = post_turn(client, user, session["id"], "find the budget").json["id"]
    assert wait_done(client, user, turn_id)["status"] == "completed"
    return session["id"], turn_id


def test_a_room_turn_with_a_tool_call_streams_every_step(
    client, user, make_agent, make_room, fake_llm
):
    _, turn_id = room_turn_with_a_tool_call(client, user, make_agent, make_room, fake_llm)
    events = open_stream(client, user, turn_path(turn_id)).rest()
    committed = [e for e in events if e.name in ("message", "tool_call", "tool_result", "usage")]
    assert [(e.name, e.data.get("role")) for e in committed] == [
        ("message", "user"),
        ("tool_call", "assistant"),
        ("usage", None),
        ("tool_result", "tool"),
        ("message", "assistant"),  # ann's reply
        ("usage", None),
        ("message", "assistant"),  # bob's
        ("usage", None),
    ]
    call, result = (e.data for e in committed if e.name.startswith("tool_"))
    assert call["visibility"] == result["visibility"] == "private"
    assert call["tool_calls"][0]["name"] == "search" and result["tool_call_id"] == "call_1"
    plan = next(e for e in events if e.name == "plan")
    assert [s["name"] for s in plan.data["speakers"]] == ["ann", "bob"]
    assert names(events).index("plan") < names(events).index("tool_call")
    assert names(events)[-2:] == ["status", "end"] and events[0].data["status"] == "queued"
    # Every id is a new cursor: the stream never sends one committed event twice.
    assert len({e.id for e in events}) == len(events)


def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    client, user, make_agent, make_room, fake_llm
):
    _, turn_id = room_turn_with_a_tool_call(client, user, make_agent, make_room, fake_llm)
    whole = open_stream(client, user, turn_path(turn_id)).rest()
    assert len(whole) > 10
    for cut in (1, 2, 5, len(whole) // 2, len(whole) - 2, len(whole) - 1):
        first = open_stream(client, user, turn_path(turn_id))
        head = [next(first) for _ in range(cut)]
        first.close()
        if cut % 2:
            rest = open_stream(client, user, turn_path(turn_id), head[-1].id).rest()
        else:  # clients that cannot set headers
            rest = open_stream(client, user, turn_path(turn_id), last_event_id=head[-1].id).rest()
        assert comparable(head + rest) == comparable(whole), cut
    # Resumed three times in a row, from points of the resumed streams.
    events, last = [], None
    for count in (3, 4, 2):
        stream = open_stream(client, user, turn_path(turn_id), last)
        events += [next(stream) for _ in range(count)]
        stream.close()
        last = events[-1].id
    events += open_stream(client, user, turn_path(turn_id), last).rest()
    assert comparable(events) == comparable(whole)


def test_a_live_stream_and_a_replay_tell_the_same_turn(
    client, held_client, settings, user, make_agent
):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])
    live = open_stream(client, user, turn_path(turn_id))
    head = [next(live)]
    dispatch(turn_id)
    lived = head + live.rest()
    replay = open_stream(client, user, turn_path(turn_id)).rest()
    committed = {"plan", "message", "usage", "progress", "end"}
    assert [(e.name, e.data) for e in lived if e.name in committed] == [
        (e.name, e.data) for e in replay if e.name in committed
    ]


def test_a_turn_that_ends_right_after_a_read_streams_in_the_replays_order(
    client, held_client, engine, user, make_agent, fake_llm
):
    """The worker commits the plan, the reply and its usage right after the stream's read (one
    statement: the turn, its messages and its usage in one snapshot), before the stream sends
    what it read: the live stream still tells the turn in the replay's order."""
    from sqlalchemy import event, text

    from tests.fake_llm import text_reply

    fake_llm.respond_with(lambda request: text_reply("the reply", delay=0.3))
    agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    session = start_session(client, user, agent=agent)
    turn_id = held_turn(held_client, user, session["id"])
    live = open_stream(client, user, turn_path(turn_id))
    head = [next(live)]
    reader, armed, reads = threading.get_ident(), [True], []

    def turn_ends_now(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() != reader or "SELECT status FROM turns" in statement:
            return  # another thread's, or this hook's own
        reads.append(statement)
        if not armed[0]:
            return
        armed[0] = False
        deadline = time.monotonic() + 10
        with engine.connect() as check:
            query = text("SELECT status FROM turns WHERE id = :id")
            while check.execute(query, {"id": turn_id}).scalar() != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.02)

    event.listen(engine.__class__, "after_cursor_execute", turn_ends_now)
    try:
        dispatch(turn_id)
        lived = head + live.rest()
    finally:
        event.remove(engine.__class__, "after_cursor_execute", turn_ends_now)
    assert not armed[0]  # the turn did end mid-read
    # Each read is one statement reading the turn, its messages and its usage records.
    assert reads and all("FROM turns" in r and "FROM usage_records" in r for r in reads), reads
    replay = open_stream(client, user, turn_path(turn_id)).rest()
    committed = {"plan", "message", "usage", "progress", "end"}
    assert [(e.name, e.data) for e in lived if e.name in committed] == [
        (e.name, e.data) for e in replay if e.name in committed
    ]


def test_a_closed_stream_leaves_no_waiter_nor_thread(
    client, held_client, settings, user, make_agent
):
    events = turn_events(settings.broker_url)
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])  # stays queued
    events._ensure_listener()  # the process's one Redis listener, started by any first watch
    time.sleep(0.1)
    waiters, threads = events.waiter_count(), threading.active_count()
    turn_stream = open_stream(client, user, turn_path(turn_id), tokens="true")
    session_stream = open_stream(client, user, session_path(session["id"]), tokens="true")
    assert next(turn_stream).data["status"] == "queued"
    assert next(session_stream).data["status"] == "queued"
    assert events.waiter_count() == waiters + 3  # the turn; the session and the turn it follows
    assert events.wants_tokens(turn_id, session["id"])
    turn_stream.close()
    session_stream.close()
    assert events.waiter_count() == waiters
    assert threading.active_count() == threads
    if settings.embedded_broker:
        assert not events.wants_tokens(turn_id, session["id"])


@pytest.mark.parametrize("provider", ["fake", "instant"])
def test_token_deltas_join_into_the_committed_reply(
    client, held_client, settings, user, make_agent, fake_llm, provider
):
    if provider == "fake":
        fake_llm.reply("Streamed, one piece after the other, from the fake server.")
        agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    else:
        agent = make_agent(user)
    session = start_session(client, user, agent=agent)
    turn_id = held_turn(held_client, user, session["id"])
    stream = open_stream(client, user, turn_path(turn_id), tokens="true")
    next(stream)  # the stream is open: the worker sees that it asked for tokens
    dispatch(turn_id)
    events = stream.rest()
    deltas = [e for e in events if e.name == "delta"]
    reply = next(e.data for e in events if e.name == "message" and e.data["role"] == "assistant")
    assert len(deltas) > 1 and all(e.id is None for e in deltas)
    assert "".join(d.data["text"] for d in deltas) == reply["content"]
    assert [d.data["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    first = deltas[0].data
    assert (first["turn_id"], first["attempt"], first["step"], first["speaker"]) == (
        turn_id,
        1,
        reply["step"],
        0,
    )
    assert (first["agent_id"], first["agent"]) == (agent.id, agent.name)
    # Deltas come before the reply they make up.
    assert names(events).index("delta") < names(events).index("message", 2)
    if provider == "fake":
        assert fake_llm.last.json["stream"] is True


def test_no_tokens_unless_asked(client, held_client, settings, user, make_agent, fake_llm):
    fake_llm.reply("Not streamed.")
    session = start_session(
        client, user, agent=make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    )
    turn_id = held_turn(held_client, user, session["id"])
    stream = open_stream(client, user, turn_path(turn_id))
    next(stream)
    dispatch(turn_id)
    assert "delta" not in names(stream.rest())
    assert "stream" not in fake_llm.last.json


def test_a_take_over_marks_the_earlier_attempts_tokens_superseded(
    client, held_client, settings, user, make_agent, db
):
    from worker import app as celery_app
    from worker.execution import execute_turn

    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])
    stream = open_stream(client, user, turn_path(turn_id), tokens="true")
    next(stream)
    # A first attempt claims the turn and dies at once: its lease is over as it starts.
    assert lifecycle.claim(db, turn_id, lease=timedelta(0)) == 1
    db.commit()
    time.sleep(0.01)
    taking_over = threading.Thread(target=execute_turn, args=(turn_id, settings, celery_app))
    taking_over.start()
    events = stream.rest()
    taking_over.join()
    superseded = [e for e in events if e.name == "superseded"]
    assert [e.data for e in superseded] == [
        {"turn_id": turn_id, "attempt": 1, "step": None, "reason": "taken_over"}
    ]
    assert superseded[0].id is None
    deltas = [e.data for e in events if e.name == "delta"]
    assert deltas and {d["attempt"] for d in deltas} == {2}
    assert names(events).index("superseded") < names(events).index("delta")
    assert events[-1].data["attempt"] == 2 and events[-1].data["status"] == "completed"


def test_a_call_retried_after_partial_output_marks_it_superseded(
    client, held_client, settings, user, make_agent, fake_llm
):
    from tests.fake_llm import text_reply

    text = "one two three four five six seven eight"
    fake_llm.then(text_reply(text, cut_after=2)).reply(text)
    session = start_session(
        client, user, agent=make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    )
    turn_id = held_turn(held_client, user, session["id"])
    stream = open_stream(client, user, turn_path(turn_id), tokens="true")
    next(stream)
    dispatch(turn_id)
    events = stream.rest()
    tokens = [e for e in events if e.name in ("delta", "superseded")]
    void = names(tokens).index("superseded")
    assert void == 2 and tokens[void].data["reason"] == "retried"
    assert tokens[void].data["step"] == tokens[0].data["step"]
    assert "".join(e.data["text"] for e in tokens[void + 1 :]) == text


def test_streams_are_the_owners_only(client, held_client, settings, user, make_user, make_agent):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])
    other = make_user()
    for path in (turn_path(turn_id), session_path(session["id"])):
        response = client.get(path, headers=other.headers)
        assert response.status_code == 404 and response.json["code"] == "not_found"
        assert client.get(path).status_code == 401
    assert client.get(turn_path(10**12), headers=user.headers).status_code == 404
    # A deleted session's turns are gone for their owner too.
    assert (
        client.delete(f"/api/v1/sessions/{session['id']}", headers=user.headers).status_code < 300
    )
    response = client.get(turn_path(turn_id), headers=user.headers)
    assert response.status_code == 404 and response.json["code"] == "not_found"


def test_bad_arguments_are_422(client, held_client, settings, user, make_agent):
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])
    other_turn = held_turn(held_client, user, session["id"], multitask="enqueue")
    path = turn_path(turn_id)
    for params, headers in (
        ({"tokens": "maybe"}, {}),
        ({"last_event_id": "nope"}, {}),
        ({}, {"Last-Event-ID": "1.2.3"}),
        ({}, {"Last-Event-ID": f"{other_turn}.2.0.0.0.0"}),  # another turn's
    ):
        response = client.get(path, query_string=params, headers={**user.headers, **headers})
        assert response.status_code == 422, (params, headers)
        assert response.json["errors"]


def test_heartbeats_and_the_longest_stream(user, make_agent, client, held_app, held_client):
    quick = held_app.extensions["roomcast"].settings  # tiny heartbeat and longest stream
    assert quick.sse_heartbeat_seconds * 3 < quick.sse_max_seconds < 1
    session = start_session(client, user, agent=make_agent(user))
    turn_id = held_turn(held_client, user, session["id"])  # stays queued
    started = time.monotonic()
    stream = open_stream(held_client, user, turn_path(turn_id))
    events = stream.rest()  # closed by the server at the longest stream's end
    assert quick.sse_max_seconds <= time.monotonic() - started < 5
    assert names(events) == ["status", "message"]
    assert stream.comments >= 3
    # The client reconnects where it was: nothing new yet, nothing repeated.
    again = open_stream(held_client, user, turn_path(turn_id), events[-1].id)
    assert again.rest() == []


def test_the_session_stream_follows_its_turns_one_after_the_other(client, user, make_agent):
    session = start_session(client, user, agent=make_agent(user), multitask="enqueue")
    live = open_stream(client, user, session_path(session["id"]))
    first = post_turn(client, user, session["id"], "one").json["id"]
    second = post_turn(client, user, session["id"], "two").json["id"]
    events = live.until("end")
    events += live.until("end")
    live.close()
    turn_ids = [e.data["turn_id"] for e in events]
    assert turn_ids == sorted(turn_ids) and set(turn_ids) == {first, second}
    ends = [e for e in events if e.name == "end"]
    assert [e.data["id"] for e in ends] == [first, second]
    assert all(e.data["status"] == "completed" for e in ends)

    # Replays from the first event, uninterrupted and interrupted, tell the same.
    start = events[0].id
    replay = open_stream(client, user, session_path(session["id"]), start)
    whole = replay.until("end") + replay.until("end")
    replay.close()
    for cut in (1, 4, len(whole) // 2, len(whole) - 1):
        stream = open_stream(client, user, session_path(session["id"]), start)
        head = [next(stream) for _ in range(cut)]
        stream.close()
        stream = open_stream(client, user, session_path(session["id"]), head[-1].id)
        rest = []
        while not (rest and rest[-1].name == "end" and rest[-1].data["id"] == second):
            rest.append(next(stream))
        stream.close()
        assert comparable(head + rest) == comparable(whole), cut
    # Without Last-Event-ID, a session stream starts after its finished turns.
    quick = open_stream(client, user, session_path(session["id"]))
    third = post_turn(client, user, session["id"], "three").json["id"]
    assert {e.data["turn_id"] for e in quick.until("end")} == {third}
    quick.close()


def test_a_session_stream_starts_where_the_session_was_when_the_client_connected(
    client, user, make_agent
):
    """The server may first iterate a stream after a turn posted meanwhile has ended (the test
    client does so): the stream still tells that turn."""
    session = start_session(client, user, agent=make_agent(user))
    live = open_stream(client, user, session_path(session["id"]))
    turn_id = post_turn(client, user, session["id"], "one").json["id"]
    assert wait_done(client, user, turn_id)["status"] == "completed"
    events = live.until("end")
    live.close()
    assert events[-1].data["id"] == turn_id
    assert {e.data["turn_id"] for e in events} == {turn_id}


def test_streams_are_in_the_openapi_document(spec):
    for path in ("/api/v1/turns/{turn_id}/events", "/api/v1/sessions/{session_id}/events"):
        get = spec["paths"][path]["get"]
        assert "text/event-stream" in get["responses"]["200"]["content"]
        params = {p["name"] for p in get["parameters"]}
        assert {"tokens", "last_event_id", "Last-Event-ID"} <= params
