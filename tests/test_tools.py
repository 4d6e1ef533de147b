"""Agents that call tools: model-driven dispatch through a real worker, the allow-list checked
at call time, tool errors given back to the model, the tool-round bound, privacy, progress, and
exactly-once steps across a killed worker."""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from models import Message, Turn, UsageRecord
from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
from tests.fake_llm import text_reply, tool_call_reply
from tests.helpers import accept_undispatched, messages, post_turn, start_session, wait_done

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def tool_agent(make_agent):
    def make(owner, name="ann", tools=("search", "file_read"), **fields):
        fields.setdefault("system_prompt", f"You are {name}.")
        return make_agent(
            owner, name=name, provider=FAKE_PROVIDER, model=FAKE_MODEL, tools=list(tools), **fields
        )

    return make


def _tool_results(request):
    return [m for m in request.messages if m["role"] == "tool"]


def _private(db, turn_id):
    return db.execute(
        select(Message.step, Message.role, Message.visibility, Message.meta)
        .where(Message.turn_id == turn_id, Message.step > 0)
        .order_by(Message.step)
    ).all()


def test_refused_unknown_and_invalid_calls_are_tool_errors_never_run(
    client, user, tool_agent, fake_llm, settings, monkeypatch
):
    import worker.tasks

    monkeypatch.setattr(worker.tasks, "settings", replace(settings, max_tool_rounds=5))
    agent = tool_agent(user, tools=["search"])
    fake_llm.tool_call("file_read", {"name": "notes.txt"})  # not on the allow-list
    fake_llm.tool_call("shell", {"cmd": "rm -rf /"})  # no such tool
    fake_llm.tool_call("search", {"limit": 3})  # no query: fails the schema
    fake_llm.tool_call("search", "{not json")
    fake_llm.reply("I could not use any tool.")
    session = start_session(client, user, agent=agent)
    turn = wait_done(client, user, post_turn(client, user, session["id"], "find x").json["id"])
    assert turn["status"] == "completed", turn["error"]
    assert turn["stop_reason"] == "completed"

    offered = [t["function"]["name"] for t in fake_llm.requests[0].tools]
    assert offered == ["search"]  # only the allow-list is offered
    history = messages(client, user, session["id"])
    tool_messages = [m for m in history if m["role"] == "tool"]
    assert [m["metadata"]["status"] for m in tool_messages] == [
        "tool_not_allowed",
        "tool_unknown",
        "tool_bad_arguments",
        "tool_bad_arguments",
    ]
    assert all(json.loads(m["content"])["error"] for m in tool_messages)
    assert "not allowed" in json.loads(tool_messages[0]["content"])["error"]
    assert "query" in json.loads(tool_messages[2]["content"])["error"]
    # Each error reached the model as the result of its call.
    last = fake_llm.requests[-1]
    calls = [m for m in last.messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert [r["tool_call_id"] for r in _tool_results(last)] == [
        c["tool_calls"][0]["id"] for c in calls
    ]
    assert history[-1]["role"] == "assistant" and history[-1]["visibility"] == "shared"


def test_the_tool_round_bound_makes_the_agent_answer(
    client, user, tool_agent, fake_llm, settings, monkeypatch
):
    import worker.tasks

    monkeypatch.setattr(worker.tasks, "settings", replace(settings, max_tool_rounds=2))
    fake_llm.respond_with(
        lambda r: tool_call_reply("search", {"query": "again"}) if r.tools else "final answer"
    )
    session = start_session(client, user, agent=tool_agent(user))
    turn = wait_done(client, user, post_turn(client, user, session["id"], "loop").json["id"])
    assert turn["status"] == "completed", turn["error"]
    assert turn["stop_reason"] == "max_tool_rounds"
    assert [bool(r.tools) for r in fake_llm.requests] == [True, True, False]
    assert messages(client, user, session["id"])[-1]["content"] == "final answer"
    assert turn["progress"]["speakers"][0]["tool_rounds"] == 2


def test_tool_calls_are_unknown_to_other_agents_and_shown_to_the_owner(
    client, user, tool_agent, make_room, fake_llm, db
):
    ann, bob = tool_agent(user, "ann"), tool_agent(user, "bob", tools=())

    def respond(request):
        if "You are ann" in request.system_prompt and not _tool_results(request):
            return tool_call_reply("search", {"query": "secret plans"})
        return text_reply("ann found nothing." if "You are ann" in request.system_prompt else "ok")

    fake_llm.respond_with(respond)
    session = start_session(client, user, room=make_room(user, [ann, bob]))
    turn = wait_done(client, user, post_turn(client, user, session["id"], "go").json["id"])
    assert turn["status"] == "completed", turn["error"]
    bob_request = [r for r in fake_llm.requests if "You are bob" in r.system_prompt][0]
    seen = json.dumps(bob_request.messages)
    assert "secret plans" not in seen and "tool" not in {m["role"] for m in bob_request.messages}
    assert not bob_request.tools  # bob may use no tool: none is offered
    history = messages(client, user, session["id"])
    assert [(m["role"], m["visibility"], m["agent_id"]) for m in history] == [
        ("user", "shared", None),
        ("assistant", "private", ann.id),
        ("tool", "private", ann.id),
        ("assistant", "shared", ann.id),
        ("assistant", "shared", bob.id),
    ]
    assert history[1]["tool_calls"][0]["name"] == "search"
    assert history[2]["tool_call_id"] == history[1]["tool_calls"][0]["id"]
    # A tool round costs no LLM call: one usage row per call, three calls.
    rows = db.scalars(select(UsageRecord.step).where(UsageRecord.turn_id == turn["id"])).all()
    assert sorted(rows) == [1, 3, 4]


def test_the_allow_list_is_checked_again_when_the_call_runs(client, user, tool_agent, fake_llm, db):
    from models import Agent

    agent = tool_agent(user, tools=["search"])
    revoke = threading.Event()

    def respond(request):
        if not _tool_results(request):
            # The owner takes the tool away while the model is deciding to call it.
            row = db.get(Agent, agent.id)
            row.tools = []
            db.commit()
            revoke.set()
            return tool_call_reply("search", {"query": "x"})
        return "done"

    fake_llm.respond_with(respond)
    session = start_session(client, user, agent=agent)
    turn = wait_done(client, user, post_turn(client, user, session["id"], "x").json["id"])
    assert revoke.is_set() and turn["status"] == "completed", turn["error"]
    tool_message = [m for m in messages(client, user, session["id"]) if m["role"] == "tool"][0]
    assert tool_message["metadata"]["status"] == "tool_not_allowed"


def test_progress_shows_the_running_tool_call(client, user, tool_agent, fake_llm, monkeypatch):
    from worker.tools import REGISTRY, Tool

    started, release = threading.Event(), threading.Event()

    def slow(arguments, context):
        started.set()
        release.wait(10)
        return {"slept": True}

    slow_tool = Tool("slow", "Waits.", {"type": "object"}, slow)
    monkeypatch.setitem(REGISTRY, "slow", slow_tool)
    fake_llm.tool_call("slow", {}, call_id="call_slow").reply("woke up")
    session = start_session(client, user, agent=tool_agent(user, tools=["slow"]))
    turn_id = post_turn(client, user, session["id"], "sleep").json["id"]
    assert started.wait(10)
    try:
        seen = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
        entry = seen["progress"]["speakers"][0]
        assert seen["status"] == "running"
        assert entry["tool_calls"] == [{"id": "call_slow", "name": "slow", "status": "running"}]
    finally:
        release.set()
    turn = wait_done(client, user, turn_id)
    assert turn["status"] == "completed"
    assert messages(client, user, session["id"])[-1]["content"] == "woke up"


def test_a_failing_tool_is_a_tool_error_not_a_failed_turn(
    client, user, tool_agent, fake_llm, monkeypatch
):
    from worker.tools import REGISTRY, Tool

    def broken(arguments, context):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(REGISTRY, "broken", Tool("broken", "Fails.", {"type": "object"}, broken))
    fake_llm.tool_call("broken", {}).reply("sorry")
    session = start_session(client, user, agent=tool_agent(user, tools=["broken"]))
    turn = wait_done(client, user, post_turn(client, user, session["id"], "x").json["id"])
    assert turn["status"] == "completed"
    result = [m for m in messages(client, user, session["id"]) if m["role"] == "tool"][0]
    assert result["metadata"]["status"] == "tool_failed"
    assert "disk on fire" not in result["content"]  # internals stay in the worker's log


def test_a_worker_killed_after_a_tool_result_resumes_without_repeating_the_call(
    client, settings, user, tool_agent, fake_llm, db, tmp_path
):
    from tests.test_recovery import _count, _worker_process
    from worker import app as celery_app
    from worker.maintenance import reap_expired

    answered = []

    def respond(request):
        if not _tool_results(request):
            return tool_call_reply("search", {"query": "budget"}, call_id="call_once")
        answered.append(request)
        # The first attempt's answer is slow enough to be killed in the middle of.
        return text_reply("answered", delay=2.0 if len(answered) == 1 else 0)

    fake_llm.respond_with(respond)
    session = start_session(client, user, agent=tool_agent(user))
    turn_id = accept_undispatched(settings, user, session["id"])
    proc = _worker_process(turn_id, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _count(db, Message, turn_id) < 3 or not answered:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
            db.expire_all()
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    # Ours: a turn another test left running may be requeued first, once its lease is over.
    while turn_id not in reap_expired(celery_app, settings.broker_url)[0]:
        assert time.monotonic() < deadline, "the reaper never took the turn over"
        time.sleep(0.2)
    turn = wait_done(client, user, turn_id)
    assert turn["status"] == "completed" and turn["attempt"] == 2
    assert [(step, role, vis) for step, role, vis, _ in _private(db, turn_id)] == [
        (1, "assistant", "private"),
        (2, "tool", "private"),
        (3, "assistant", "shared"),
    ]
    # The model's tool call was made once, by the first attempt; the take-over read its
    # recorded result and made only the answering call.
    first_calls = [r for r in fake_llm.requests if not _tool_results(r)]
    assert len(first_calls) == 1
    assert len(answered) == 2 and _tool_results(answered[1])[0]["tool_call_id"] == "call_once"
    usage = db.execute(
        select(UsageRecord.step, UsageRecord.attempt)
        .where(UsageRecord.turn_id == turn_id)
        .order_by(UsageRecord.step)
    ).all()
    assert usage == [(1, 1), (3, 2)]
    db.expire_all()
    assert db.get(Turn, turn_id).status == "completed"


@pytest.fixture
def text_provider(settings, monkeypatch, fake_llm, tmp_path):
    """A provider named fake-text: the fake server, as a model without function calling."""
    import worker.tasks
    from tests.conftest import _PROVIDERS_FILE

    path = tmp_path / "providers.toml"
    path.write_text(
        Path(_PROVIDERS_FILE).read_text()
        + f'\n[providers.fake-text]\ntype = "openai"\nbase_url = "{fake_llm.base_url}"\n'
        'default_model = "fake-model"\ntool_calling = "text"\n'
    )
    monkeypatch.setattr(worker.tasks, "settings", replace(settings, providers_file=str(path)))
    return "fake-text"


@pytest.mark.parametrize("content", ["search: quarterly budget", "Search for quarterly budget"])
def test_the_text_trigger_runs_search_for_models_without_function_calling(
    client, user, make_agent, fake_llm, text_provider, content
):
    agent = make_agent(user, name="ann", provider=text_provider, model=FAKE_MODEL, tools=["search"])
    fake_llm.reply("Here is what I found.")
    session = start_session(client, user, agent=agent)
    turn = wait_done(client, user, post_turn(client, user, session["id"], content).json["id"])
    assert turn["status"] == "completed", turn["error"]
    (request,) = fake_llm.requests
    assert request.tools is None  # never offered natively
    # The results reach the model as text, after the user's message.
    assert [m["role"] for m in request.messages][-1] == "user"
    assert "[search result]:" in request.messages[-1]["content"]
    history = messages(client, user, session["id"])
    assert [(m["role"], m["visibility"]) for m in history] == [
        ("user", "shared"),
        ("assistant", "private"),
        ("tool", "private"),
        ("assistant", "shared"),
    ]
    call = history[1]["tool_calls"][0]
    assert call["name"] == "search" and json.loads(call["arguments"]) == {
        "query": "quarterly budget"
    }
    assert history[1]["metadata"] == {"trigger": "text"}


def test_the_text_trigger_needs_the_search_permission(
    client, user, make_agent, fake_llm, text_provider
):
    agent = make_agent(user, name="ann", provider=text_provider, model=FAKE_MODEL, tools=[])
    fake_llm.reply("I cannot search.")
    session = start_session(client, user, agent=agent)
    turn_id = post_turn(client, user, session["id"], "search: budget").json["id"]
    assert wait_done(client, user, turn_id)["status"] == "completed"
    assert [m["role"] for m in messages(client, user, session["id"])] == ["user", "assistant"]
    assert "result" not in fake_llm.requests[0].messages[-1]["content"]


def test_search_then_file_read_then_an_answer_from_the_file(
    client, user, make_user, tool_agent, fake_llm
):
    from tests.files_helpers import uploaded

    filler = b"Minutes of an ordinary meeting about nothing in particular. " * 40
    mine = uploaded(
        client,
        user,
        "budget.txt",
        filler + b"\n\nThe quarterly budget for rockets is 42 million crowns.\n\n" + filler,
    )
    stranger = make_user()
    theirs = uploaded(client, stranger, "theirs.txt", b"The stranger's quarterly budget secret.")

    def respond(request):
        results = [json.loads(m["content"]) for m in _tool_results(request)]
        if not results:
            return tool_call_reply("search", {"query": "quarterly budget rockets"})
        if len(results) == 1:
            best = results[0]["results"][0]
            offset = best["char_start"]
            return tool_call_reply("file_read", {"file_id": best["file_id"], "offset": offset})
        if len(results) == 2:
            return tool_call_reply("file_read", {"file_id": theirs["id"]})
        sentence = next(s for s in results[1]["text"].split(".") if "rockets" in s)
        return f"From the file: {sentence.strip()}."

    fake_llm.respond_with(respond)
    session = start_session(client, user, agent=tool_agent(user))
    turn_id = post_turn(client, user, session["id"], "What is the rockets budget?").json["id"]
    turn = wait_done(client, user, turn_id)
    assert turn["status"] == "completed", turn["error"]

    found, read, refused = (json.loads(r["content"]) for r in _tool_results(fake_llm.last))
    # Search pointed at the right chunk of the right file, and file_read read there.
    assert found["results"][0]["file_id"] == mine["id"]
    assert "42 million" in found["results"][0]["snippet"]
    assert read["file_id"] == mine["id"] and "42 million crowns" in read["text"]
    assert read["offset"] == found["results"][0]["char_start"]
    # Another user's file is no different from a missing one, inside a turn too.
    assert "error" in refused and "secret" not in json.dumps(refused)
    history = messages(client, user, session["id"])
    statuses = [m["metadata"]["status"] for m in history if m["role"] == "tool"]
    assert statuses == ["ok", "ok", "tool_error"]
    assert (
        history[-1]["content"]
        == "From the file: The quarterly budget for rockets is 42 million crowns."
    )
