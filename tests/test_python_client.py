"""The Python client (clients/python) against a live server as ``make run`` starts it.

Most tests run twice: with ``Roomcast``, and with ``AsyncRoomcast`` driven on one event loop
(``Blocking`` below), so both clients are held to the same behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from roomcast_client import (
    APIConnectionError,
    APIError,
    AsyncRoomcast,
    Conflict,
    Event,
    NotFound,
    RateLimited,
    Roomcast,
    Turn,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from roomcast_client._methods import Resource

from tests.conftest import FAKE_PROVIDER
from tests.scripted_proxy import ScriptedProxy
from tests.tcp_proxy import TcpProxy

INSTANT = {"provider": "instant", "model": "instant"}


class Blocking:
    """An AsyncRoomcast (or one of its resources) called from sync code, on one event loop:
    coroutines are run to their end, async iterators read one item per step."""

    def __init__(self, target: Any, runner: asyncio.Runner) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if isinstance(value, Resource):
            return Blocking(value, self._runner)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            if inspect.iscoroutine(result):
                return self._runner.run(result)
            if isinstance(result, AsyncIterator):
                return self._iterate(result)
            return result

        return call

    def _iterate(self, items: AsyncIterator[Any]) -> Iterator[Any]:
        async def step() -> Any:
            return await anext(items)

        try:
            while True:
                try:
                    yield self._runner.run(step())
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(items.aclose())


@pytest.fixture(scope="module")
def account(live_server) -> str:
    return live_server.register()[1]


@pytest.fixture(scope="module")
def other_account(live_server) -> str:
    return live_server.register()[1]


@pytest.fixture(params=["sync", "async"])
def connect(request, live_server, account) -> Iterator[Callable[..., Any]]:
    """``connect(**options)``: a client of the test's kind, as the module's user by default."""
    runner = asyncio.Runner()
    opened: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("base_url", live_server.base_url)
        options.setdefault("token", account)
        options.setdefault("timeout", 10)
        if request.param == "sync":
            client = Roomcast(**options)
            opened.append(client.close)
            return client
        client = AsyncRoomcast(**options)
        opened.append(lambda: runner.run(client.aclose()))
        return Blocking(client, runner)

    yield make
    for close in opened:
        close()
    runner.close()


@pytest.fixture
def rc(connect):
    return connect()


def new_name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def instant_session(rc) -> Any:
    agent = rc.agents.create(name=new_name("instant"), **INSTANT)
    return rc.sessions.create(agent_id=agent.id)


# -- accounts ---------------------------------------------------------------------------------


def test_register_log_in_list_and_revoke_tokens(connect, live_server):
    anonymous = connect(token="")
    email = f"client-{time.time_ns()}@example.com"
    user = anonymous.auth.register(email, "a long password")
    assert user.email == email and user.id > 0 and isinstance(user.created_at, datetime)
    with pytest.raises(Conflict) as taken:
        anonymous.auth.register(email, "a long password")
    assert (taken.value.status, taken.value.code) == (409, "email_taken")
    with pytest.raises(Unauthorized) as wrong:
        anonymous.auth.create_token(email, "not the password")
    assert wrong.value.code == "invalid_credentials"

    first = anonymous.auth.create_token(email, "a long password", name="first")
    second = anonymous.auth.create_token(email, "a long password")
    assert first.token.startswith(first.token_hint) and first.name == "first"
    rc = connect(token=first.token)
    assert rc.auth.me() == user
    assert [t.id for t in rc.auth.tokens.list(limit=1)] == [first.id, second.id]
    rc.auth.tokens.revoke(second.id)
    with pytest.raises(Unauthorized) as revoked:
        connect(token=second.token).auth.me()
    assert revoked.value.status == 401
    with pytest.raises(NotFound):
        rc.auth.tokens.revoke(second.id)


def test_the_environment_names_the_server_and_the_token(live_server, account, monkeypatch):
    monkeypatch.setenv("ROOMCAST_URL", live_server.base_url + "/api/v1/")
    monkeypatch.setenv("ROOMCAST_TOKEN", account)
    with Roomcast() as rc:
        assert rc.base_url == live_server.base_url + "/api/v1/"
        assert rc.token == account
        assert rc.auth.me().id > 0
        assert rc.health.live().status == "ok"
        assert rc.health.ready().ok


# -- agents, rooms, sessions ------------------------------------------------------------------


def test_agents_crud_and_lists_read_page_after_page(connect, live_server, other_account):
    rc = connect()
    prefix = new_name("pager")  # the lists below ask for this test's agents only (q=)
    made = [
        rc.agents.create(
            name=f"{prefix}-{i}", system_prompt="Be brief.", tools=["search"], **INSTANT
        )
        for i in range(5)
    ]
    with ScriptedProxy(live_server.base_url) as proxy:  # to see the pages asked for
        paged = connect(base_url=proxy.url)
        assert [a.id for a in paged.agents.list(q=prefix, limit=2)] == [a.id for a in made]
        pages = [seen.query for seen in proxy.requests_to("GET", "/api/v1/agents")]
        assert [page["limit"] for page in pages] == ["2", "2", "2"]
        assert "cursor" not in pages[0] and pages[1]["cursor"] != pages[2]["cursor"]
        # Lazily: a page is read when the caller gets to it.
        first = itertools.islice(paged.agents.list(q=prefix, limit=2), 1)
        assert [a.id for a in first] == [made[0].id]
        assert len(proxy.requests_to("GET", "/api/v1/agents")) == 4
    assert made[0].tools == ["search"] and made[0].system_prompt == "Be brief."
    assert made[0].provider == "instant" and made[0].created_at is not None
    assert [a.id for a in rc.agents.list(q=f"{prefix}-3".upper())] == [made[3].id]
    newest_first = rc.agents.list(q=prefix, order="desc", limit=3)
    assert [a.id for a in newest_first] == [a.id for a in made][::-1]

    agent = rc.agents.update(made[0].id, name="renamed", temperature=0.5, max_tokens=64)
    assert (agent.name, agent.temperature, agent.max_tokens) == ("renamed", 0.5, 64)
    assert rc.agents.update(agent.id, temperature=None).temperature is None
    assert rc.agents.get(agent.id).name == "renamed"
    rc.agents.delete(agent.id)
    with pytest.raises(NotFound) as gone:
        rc.agents.get(agent.id)
    assert (gone.value.status, gone.value.code) == (404, "not_found")
    # Another user's agent is as missing as a deleted one.
    with pytest.raises(NotFound):
        connect(token=other_account).agents.get(made[1].id)


def test_rooms_and_their_agents(rc):
    writer = rc.agents.create(name=new_name("writer"), **INSTANT)
    editor = rc.agents.create(name=new_name("editor"), **INSTANT)
    room = rc.rooms.create(
        name=new_name("crew"),
        instructions="Keep it short.",
        orchestration={"mode": "round_robin", "max_rounds": 2},
        metadata={"team": "docs"},
    )
    assert (room.orchestration.mode, room.orchestration.max_rounds) == ("round_robin", 2)
    assert room.metadata == {"team": "docs"} and room.agents == []

    rc.rooms.agents.add(room.id, writer.id)
    member = rc.rooms.agents.add(room.id, editor.id, position=0)
    assert (member.agent_id, member.position, member.agent.name) == (editor.id, 0, editor.name)
    assert [m.agent_id for m in rc.rooms.agents.list(room.id, limit=1)] == [editor.id, writer.id]
    assert rc.rooms.agents.update(room.id, editor.id, position=1).position == 1
    assert [m.agent_id for m in rc.rooms.get(room.id).agents] == [writer.id, editor.id]
    rc.rooms.agents.remove(room.id, editor.id)
    with pytest.raises(NotFound):
        rc.rooms.agents.remove(room.id, editor.id)

    room = rc.rooms.update(room.id, description="Release notes", orchestration={"max_rounds": 3})
    assert (room.description, room.orchestration.mode) == ("Release notes", "round_robin")
    assert room.orchestration.max_rounds == 3
    assert room.id in [r.id for r in rc.rooms.list(q=room.name)]
    rc.rooms.delete(room.id)
    with pytest.raises(NotFound):
        rc.rooms.get(room.id)


def test_sessions_of_an_agent_and_of_a_room(rc):
    agent = rc.agents.create(name=new_name("solo"), **INSTANT)
    room = rc.rooms.create(name=new_name("room"))
    made = [rc.sessions.create(agent_id=agent.id, title=f"s{i}") for i in range(3)]
    assert (made[0].scope, made[0].agent_id, made[0].room_id) == ("agent", agent.id, None)
    in_room = rc.sessions.create(room_id=room.id, multitask="enqueue", metadata={"k": 1})
    assert (in_room.scope, in_room.multitask, in_room.metadata) == ("room", "enqueue", {"k": 1})
    assert [s.id for s in rc.sessions.list(agent_id=agent.id, limit=2)] == [s.id for s in made]
    assert [s.id for s in rc.sessions.list(room_id=room.id)] == [in_room.id]

    session = rc.sessions.update(made[0].id, title="renamed", multitask="interrupt")
    assert (session.title, session.multitask) == ("renamed", "interrupt")
    assert rc.sessions.get(session.id).title == "renamed"
    rc.sessions.delete(session.id)
    with pytest.raises(NotFound):
        rc.sessions.get(session.id)
    with pytest.raises(TypeError):
        rc.sessions.create(agent_id=agent.id, room_id=room.id)
    with pytest.raises(TypeError):
        rc.sessions.list()


# -- turns ------------------------------------------------------------------------------------


def test_a_turn_is_posted_waited_for_and_read_back(rc):
    session = instant_session(rc)
    posted = rc.turns.create(session.id, "Hello there.", metadata={"from": "test"})
    assert isinstance(posted, Turn) and posted.session_id == session.id
    assert posted.status in {"queued", "running", "completed"}
    turn = rc.turns.wait(posted.id, timeout=20)
    assert turn.status == "completed" and turn.is_terminal
    assert turn.metadata == {"from": "test"} and turn.message_ids
    assert turn.usage.total_tokens > 0 and isinstance(turn.usage.cost, Decimal)
    assert rc.turns.get(turn.id) == turn

    second = rc.turns.wait(rc.turns.create(session.id, "Again.").id)
    assert [t.id for t in rc.turns.list(session.id, limit=1)] == [second.id, turn.id]
    assert [t.id for t in rc.turns.list(session.id, order="asc")] == [turn.id, second.id]
    history = list(rc.messages.list(session.id, limit=1))
    assert [m.role for m in history] == ["user", "assistant"] * 2
    assert history[0].content == "Hello there." and history[1].agent_id == session.agent_id
    assert [m.id for m in rc.messages.list(session.id, turn_id=second.id)] == [
        second.input_message_id,
        *second.message_ids,
    ]

    usage = rc.turns.usage(turn.id)
    assert usage.turn_id == turn.id and usage.totals.total_tokens == turn.usage.total_tokens
    assert [r.provider for r in usage.records] == ["instant"]
    assert usage.by_agent[0].agent_id == session.agent_id


def test_the_same_idempotency_key_returns_the_same_turn(rc):
    session = instant_session(rc)
    key = new_name("key")
    first = rc.turns.create(session.id, "Once.", idempotency_key=key)
    again = rc.turns.create(session.id, "Once.", idempotency_key=key)
    assert again.id == first.id
    assert [t.id for t in rc.turns.list(session.id)] == [first.id]
    with pytest.raises(ValidationError) as reused:
        rc.turns.create(session.id, "Something else.", idempotency_key=key)
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")


def test_stream_sends_the_events_in_order_ending_with_end(rc):
    session = instant_session(rc)
    turn = rc.turns.create(session.id, "Stream me.")
    streamed = list(rc.turns.stream(turn.id, tokens=True))
    # Token deltas (sent while the reply is written, if the stream is open then) are not
    # committed: they carry no id.
    events = [e for e in streamed if e.event not in ("delta", "superseded")]
    assert all(e.id is None for e in streamed if e not in events)
    names = [e.event for e in events]
    assert names[0] == "status" and names[-1] == "end" and names.count("end") == 1
    assert names.index("message") < names.index("usage") < names.index("end")
    assert all(isinstance(e, Event) and e.turn_id == turn.id and e.id for e in events)
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[-1] == "completed" and "running" in statuses
    ended = events[-1].turn
    assert ended is not None and ended.status == "completed"
    replies = [e.message for e in events if e.event == "message"]
    assert [m.role for m in replies if m] == ["user", "assistant"]
    assert ended.message_ids == [m.id for m in replies if m and m.role == "assistant"]


def test_stream_resumes_after_the_last_event_id_without_gap_or_repeat(rc):
    session = instant_session(rc)
    turn = rc.turns.wait(rc.turns.create(session.id, "Resume me.").id)
    whole = [e.id for e in rc.turns.stream(turn.id)]
    assert len(whole) >= 5 and len(set(whole)) == len(whole)

    head = list(itertools.islice(rc.turns.stream(turn.id), 2))  # then the stream is closed
    rest = list(rc.turns.stream(turn.id, last_event_id=head[-1].id))
    assert [e.id for e in head + rest] == whole
    # After the end everything has been sent: nothing more (the server answers 204).
    assert list(rc.turns.stream(turn.id, last_event_id=whole[-1])) == []


def test_a_dropped_stream_is_resumed_where_it_broke(connect, live_server, fake_llm):
    """A room turn whose two replies take a while; the connection is cut after the first
    reply: the client reconnects with Last-Event-ID and reads on, missing and repeating
    nothing."""
    fake_llm.reply("First.", delay=0.3).reply("Second.", delay=0.3)
    rc = connect()
    room = rc.rooms.create(name=new_name("slow"))
    for name in ("one", "two"):
        agent = rc.agents.create(name=new_name(name), provider=FAKE_PROVIDER)
        rc.rooms.agents.add(room.id, agent.id)
    session = rc.sessions.create(room_id=room.id)
    port = int(live_server.base_url.rsplit(":", 1)[1])
    with TcpProxy(("127.0.0.1", port)) as proxy:
        flaky = connect(base_url=f"http://127.0.0.1:{proxy.port}", backoff=0.05)
        turn = flaky.turns.create(session.id, "Both of you, please.")
        got: list[Event] = []
        for event in flaky.turns.stream(turn.id):
            got.append(event)
            if event.event == "message" and event.data["content"] == "First.":
                proxy.cut()
                proxy.restore()
    after_cut = got[[e.data.get("content") for e in got].index("First.") + 1 :]
    assert [e.data.get("content") for e in after_cut if e.event == "message"] == ["Second."]
    assert got[-1].event == "end" and got[-1].turn.status == "completed"
    # Nothing repeated, nothing missed: the same story as the whole stream of the ended turn
    # (which shows the progress only as it ended).
    assert len({e.id for e in got}) == len(got)
    assert story(got) == story(list(rc.turns.stream(turn.id)))


def story(events: list[Event]) -> dict[str, list[Any]]:
    """What a turn's events say: its statuses, messages, usage records and end, each in order
    (a live stream may see a status after a message that a replay sends before it, and sees
    the progress change)."""
    key = {"status": "status", "message": "id", "usage": "id", "end": "status"}
    told: dict[str, list[Any]] = {name: [] for name in key}
    for event in events:
        if event.event in key:
            told[event.event].append(event.data[key[event.event]])
    return told


def test_a_stream_closed_early_by_the_server_is_resumed(connect, live_server):
    """A server ends a stream after a while (ROOMCAST_SSE_MAX_SECONDS): the client opens it
    again at once, after the last event it had."""
    rc = connect()
    session = instant_session(rc)
    turn = rc.turns.wait(rc.turns.create(session.id, "Close early.").id)
    whole = [e.id for e in rc.turns.stream(turn.id)]
    path = rf"/api/v1/turns/{turn.id}/events"
    with ScriptedProxy(live_server.base_url) as proxy:
        proxy.end_stream(path, events=2, times=2)
        got = [e.id for e in connect(base_url=proxy.url).turns.stream(turn.id)]
    assert got == whole
    resumed = [seen.headers.get("last-event-id") for seen in proxy.requests_to("GET", path)]
    assert resumed == [None, whole[1], whole[3]]


def test_stream_long_polls_a_server_without_event_streams(connect, live_server):
    rc = connect()
    session = instant_session(rc)
    with ScriptedProxy(live_server.base_url) as proxy:
        proxy.answer("GET", r"/api/v1/turns/\d+/events", 404, code="not_found", times=100)
        older = connect(base_url=proxy.url)
        turn = older.turns.create(session.id, "No streams here.")
        events = list(older.turns.stream(turn.id))
        with pytest.raises(NotFound):
            list(older.turns.stream(10**9))
    names = [e.event for e in events]
    assert names[0] == "status" and names[-1] == "end"
    assert events[-1].turn.status == "completed"
    messages = [e.message for e in events if e.event == "message"]
    assert [m.role for m in messages if m] == ["user", "assistant"]
    assert proxy.requests_to("GET", rf"/api/v1/turns/{turn.id}/events")


def test_session_stream_follows_its_turns_from_an_event_id(rc):
    """Resumed after the first event of a finished turn: the rest of that turn, then the next
    turn, posted while the stream is read."""
    session = instant_session(rc)
    first = rc.turns.wait(rc.turns.create(session.id, "First.").id)
    first_events = list(rc.turns.stream(first.id))
    seen: list[Event] = []
    second = None
    for event in rc.sessions.events(session.id, last_event_id=first_events[0].id):
        seen.append(event)
        if event.event == "end" and second is None:
            second = rc.turns.create(session.id, "Second.")
        elif event.event == "end":
            break
    assert [e.id for e in seen[: len(first_events) - 1]] == [e.id for e in first_events[1:]]
    assert [e.turn_id for e in seen if e.event == "end"] == [first.id, second.id]
    assert seen[-1].turn.status == "completed"


def test_an_active_turn_conflicts_times_a_wait_out_and_is_cancelled(rc, fake_llm):
    fake_llm.reply("Slow.", delay=5)
    agent = rc.agents.create(name=new_name("slow"), provider=FAKE_PROVIDER)
    session = rc.sessions.create(agent_id=agent.id)
    turn = rc.turns.create(session.id, "Take your time.")
    with pytest.raises(WaitTimeout) as waited:
        rc.turns.wait(turn.id, timeout=0.3)
    assert waited.value.turn.id == turn.id and not waited.value.turn.is_terminal
    with pytest.raises(Conflict) as active:
        rc.turns.create(session.id, "Me too.")
    assert (active.value.code, active.value.details["active_turn_id"]) == ("turn_active", turn.id)

    cancelled = rc.turns.cancel(turn.id)
    assert cancelled.status == "cancelled"
    assert rc.turns.cancel(turn.id).status == "cancelled"  # idempotent
    assert rc.turns.wait(turn.id).status == "cancelled"
    rc.agents.delete(agent.id)
    with pytest.raises(Conflict) as deleted:
        rc.turns.create(session.id, "Anyone?")
    assert deleted.value.code == "agent_deleted"


# -- files and usage --------------------------------------------------------------------------


def test_files_upload_list_read_and_delete(rc, tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\nThe launch is on Tuesday.")
    from_path = rc.files.upload(path)
    from_bytes = rc.files.upload(b"plain text", filename="plain.txt")
    with path.open("rb") as handle:
        from_handle = rc.files.upload(handle, filename="again.md", content_type="text/markdown")
    assert (from_path.name, from_path.size_bytes) == ("notes.md", path.stat().st_size)
    assert from_path.text_status == "ready" and from_path.char_count > 0
    assert from_bytes.name == "plain.txt" and from_handle.sha256 == from_path.sha256
    assert rc.files.content(from_path.id) == path.read_bytes()
    assert rc.files.get(from_bytes.id) == from_bytes
    listed = [f.id for f in rc.files.list(limit=2)]
    assert {from_path.id, from_bytes.id, from_handle.id} <= set(listed)
    assert [f.id for f in rc.files.list(q="plain")] == [from_bytes.id]
    rc.files.delete(from_bytes.id)
    with pytest.raises(NotFound):
        rc.files.content(from_bytes.id)
    with pytest.raises(APIError) as refused:
        rc.files.upload(b"\x89PNG\r\n", filename="photo.png")
    assert (refused.value.status, refused.value.code) == (415, "unsupported_media_type")
    with pytest.raises(TypeError):
        rc.files.upload(b"no name")


def test_usage_report(rc):
    session = instant_session(rc)
    turn = rc.turns.wait(rc.turns.create(session.id, "Count me.").id)
    # From this turn on (the module's tests run one after the other): its call only.
    report = rc.usage.get(group_by="agent", since=turn.created_at)
    assert report.group_by == "agent" and report.since == turn.created_at
    assert report.totals.calls == 1 and report.totals.total_tokens == turn.usage.total_tokens
    assert [g.agent_id for g in report.groups] == [session.agent_id]
    by_day = rc.usage.get(group_by="day", since=turn.created_at.date())
    assert [g.day for g in by_day.groups] == [turn.created_at.date()]
    later = rc.usage.get(since=turn.created_at + timedelta(days=1))
    assert later.totals.calls == 0 and later.groups == []
    with pytest.raises(ValidationError) as invalid:
        rc.usage.get(group_by="planet")
    assert invalid.value.status == 422 and "group_by" in invalid.value.errors


def test_errors_carry_status_code_message_and_field_errors(connect):
    rc = connect()
    with pytest.raises(ValidationError) as invalid:
        rc.agents.create(name="", temperature=7, tools=["telepathy"])
    error = invalid.value
    assert (error.status, error.code) == (422, "validation_error")
    assert set(error.errors) == {"name", "temperature", "tools"}
    assert "422 validation_error" in str(error) and "temperature" in str(error)
    with pytest.raises(ValidationError) as unknown:
        rc.agents.create(name=new_name("x"), colour="blue")
    assert "colour" in unknown.value.errors
    with pytest.raises(Unauthorized) as anonymous:
        connect(token="rc_not-a-token").agents.get(1)
    assert (anonymous.value.status, anonymous.value.code) == (401, "unauthorized")
    with pytest.raises(NotFound) as missing:
        rc.turns.wait(10**9)
    assert missing.value.message == f"Turn {10**9} not found."


# -- retries ----------------------------------------------------------------------------------


def test_retry_honours_retry_after_and_repeats_a_post_safely(connect, live_server):
    """The first POST of a turn reaches the server, but its answer is lost to a 503 (sync
    client) or a 429 (async client) with Retry-After: 1; the client waits a second and repeats
    it with the same Idempotency-Key, which returns the turn created the first time."""
    session = instant_session(connect())
    with ScriptedProxy(live_server.base_url) as proxy:
        rc = connect(base_url=proxy.url)
        status = 503 if isinstance(rc, Roomcast) else 429
        proxy.answer(
            "POST",
            rf"/api/v1/sessions/{session.id}/turns",
            status,
            headers={"Retry-After": "1"},
            forward=True,
        )
        started = time.monotonic()
        turn = rc.turns.create(session.id, "Retry me.")
        elapsed = time.monotonic() - started
        assert [t.id for t in rc.turns.list(session.id)] == [turn.id]
        rc.sessions.create(agent_id=session.agent_id)
    posts = proxy.requests_to("POST", rf"/api/v1/sessions/{session.id}/turns")
    assert [p.answered_by_rule for p in posts] == [True, False]
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert 1.0 <= elapsed < 5
    # Every POST carries a key of its own.
    (other,) = proxy.requests_to("POST", rf"/api/v1/agents/{session.agent_id}/sessions")
    assert other.headers["idempotency-key"] not in ("", posts[0].headers["idempotency-key"])


def test_retries_end_and_a_long_retry_after_is_not_waited_for(connect, live_server):
    with ScriptedProxy(live_server.base_url) as proxy:
        rc = connect(base_url=proxy.url, max_retries=2, backoff=0.01)
        proxy.answer("GET", "/api/v1/agents", 503, headers={"Retry-After": "0"}, times=3)
        with pytest.raises(APIError) as unavailable:
            list(rc.agents.list())
        assert unavailable.value.status == 503 and unavailable.value.code == "scripted_503"
        assert len(proxy.requests_to("GET", "/api/v1/agents")) == 3

        proxy.answer(
            "GET", "/api/v1/auth/me", 429, code="rate_limited", headers={"Retry-After": "3600"}
        )
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            rc.auth.me()
        assert time.monotonic() - started < 1
        assert (limited.value.code, limited.value.retry_after) == ("rate_limited", 3600)
        # 503s without Retry-After back off exponentially, then succeed.
        proxy.answer("GET", "/api/v1/auth/me", 503, times=2)
        assert rc.auth.me().id > 0


def test_connection_failures_are_retried_then_raised(connect):
    from tests.processes import free_port

    rc = connect(base_url=f"http://127.0.0.1:{free_port()}", max_retries=2, backoff=0.01)
    with pytest.raises(APIConnectionError) as failed:
        rc.agents.create(name="never")
    assert isinstance(failed.value.__cause__, httpx.ConnectError)


# -- the async client as asyncio code uses it -------------------------------------------------


def test_async_client_waits_for_many_turns_at_once(live_server, account):
    async def main() -> list[str]:
        async with AsyncRoomcast(live_server.base_url, token=account) as rc:
            agent = await rc.agents.create(name=new_name("many"), **INSTANT)
            sessions = await asyncio.gather(
                *(rc.sessions.create(agent_id=agent.id) for _ in range(4))
            )
            turns = await asyncio.gather(*(rc.turns.create(s.id, "Hi.") for s in sessions))
            done = await asyncio.gather(*(rc.turns.wait(t.id) for t in turns))
            events = [e.event async for e in rc.turns.stream(turns[0].id)]
            assert events[-1] == "end"
            assert [a.id async for a in rc.agents.list(q=agent.name)] == [agent.id]
            return [turn.status for turn in done]

    assert asyncio.run(main()) == ["completed"] * 4


def test_unknown_fields_of_a_newer_server_are_kept():
    turn = Turn.from_dict(
        {"id": 1, "session_id": 2, "status": "queued", "webhook": {"status": "pending"}}
    )
    assert turn.extra == {"webhook": {"status": "pending"}} and turn.raw["webhook"]
    assert turn.usage.total_tokens == 0 and turn.created_at is None
