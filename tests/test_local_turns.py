"""The real local model (SmolLM2-135M-Instruct) answering turns through the worker."""

import pytest

from models.providers import LOCAL_MODEL, LOCAL_PROVIDER
from tests.fake_llm import template_violation
from tests.helpers import messages, post_turn, start_session, wait_done
from worker.providers import LocalLlamaProvider
from worker.providers.openai_compat import request_body

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_standalone_and_room_turns_on_the_local_model(client, user, make_agent, make_room):
    ann = local_agent(make_agent, user, "ann")
    session = start_session(client, user, agent=ann)
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "Say hello.").json["id"], timeout=120
    )
    assert turn["status"] == "completed", turn["error"]
    assert turn["usage"]["prompt_tokens"] > 0 and turn["usage"]["completion_tokens"] > 0
    assert messages(client, user, session["id"])[-1]["content"].strip()

    room = make_room(user, [ann, local_agent(make_agent, user, "bob")], mode="sequential")
    room_session = start_session(client, user, room=room)
    turn = wait_done(
        client,
        user,
        post_turn(client, user, room_session["id"], "Greet me.").json["id"],
        timeout=120,
    )
    assert turn["status"] == "completed", turn["error"]
    replies = [m for m in messages(client, user, room_session["id"]) if m["role"] == "assistant"]
    assert len(replies) == 2 and all(m["content"].strip() for m in replies)
    assert turn["usage"]["completion_tokens"] > 0


@pytest.fixture
def local_contexts(monkeypatch):
    """The messages of every call to the local model, as sent (the worker runs in-process)."""
    sent = []
    complete = LocalLlamaProvider.complete

    def spy(self, messages, **kwargs):
        sent.append(
            request_body(messages, model="m", tools=None, temperature=None, max_tokens=None)
        )
        return complete(self, messages, **kwargs)

    monkeypatch.setattr(LocalLlamaProvider, "complete", spy)
    return sent


def local_agent(make_agent, user, name):
    return make_agent(
        user,
        name=name,
        provider=LOCAL_PROVIDER,
        model=LOCAL_MODEL,
        system_prompt="Answer in one short sentence.",
        max_tokens=24,
    )


def room_turn(client, user, room, content):
    session = start_session(client, user, room=room)
    turn_id = post_turn(client, user, session["id"], content).json["id"]
    turn = wait_done(client, user, turn_id, timeout=300)
    replies = [m for m in messages(client, user, session["id"]) if m["role"] == "assistant"]
    return turn, replies


def assert_strict_template_contexts(sent):
    """Every context would pass a strict template: the test server's checker says so."""
    assert sent
    for body in sent:
        assert template_violation(body["messages"]) is None, body["messages"]
        assert body["messages"][-1]["role"] == "user"


@pytest.mark.parametrize(
    ("mode", "content"),
    [
        ("sequential", "Name a colour."),
        ("round_robin", "Name a colour."),
        ("mention", "@ben what is 2+2?"),
        ("supervisor", "Name a colour."),
    ],
)
def test_every_room_mode_completes_on_the_local_model(
    client, user, make_agent, make_room, local_contexts, mode, content
):
    members = [local_agent(make_agent, user, name) for name in ("ann", "ben", "cy")]
    room = make_room(user, members, mode=mode, max_rounds=3)
    turn, replies = room_turn(client, user, room, content)
    assert turn["status"] == "completed", turn["error"]
    assert replies and all(m["content"].strip() for m in replies)
    speakers = [s["name"] for s in turn["progress"]["speakers"]]
    assert len(replies) == len(speakers)
    if mode == "sequential":
        assert speakers == ["ann", "ben", "cy"] * 3
    elif mode == "round_robin":
        assert speakers == ["ann", "ben", "cy"]
    elif mode == "mention":
        assert speakers[0] == "ben"  # further rounds only if a reply addresses a member
    else:
        assert 1 <= len(speakers) <= 3
    assert_strict_template_contexts(local_contexts)


def test_a_one_member_room_speaks_three_times_on_the_local_model(
    client, user, make_agent, make_room, local_contexts
):
    # The agent speaks right after itself: its contexts end with its own reply unless framed
    # (llama.cpp continues such a context as a prefill, and refuses two replies at the end).
    room = make_room(user, [local_agent(make_agent, user, "ann")], mode="sequential", max_rounds=3)
    turn, replies = room_turn(client, user, room, "Tell me about the sea.")
    assert turn["status"] == "completed", turn["error"]
    assert len(replies) == 3 and all(m["content"].strip() for m in replies)
    assert len(local_contexts) == 3
    assert_strict_template_contexts(local_contexts)


def test_the_local_model_answers_from_a_search_it_triggered(
    client, user, make_agent, local_contexts
):
    """The local model has no function calling: `search for ...` runs the search tool over the
    user's files, and the model answers with the results in its context."""
    from tests.files_helpers import uploaded

    uploaded(
        client,
        user,
        "launch.md",
        b"# Launch notes\n\nThe launch code word is PELICAN. Keep it secret.\n",
    )
    agent = make_agent(
        user,
        name="ann",
        provider=LOCAL_PROVIDER,
        model=LOCAL_MODEL,
        system_prompt="Answer in one short sentence, using the search results you are given.",
        max_tokens=24,
        tools=["search"],
    )
    session = start_session(client, user, agent=agent)
    turn_id = post_turn(client, user, session["id"], "search for the launch code word").json["id"]
    turn = wait_done(client, user, turn_id, timeout=120)
    assert turn["status"] == "completed", turn["error"]

    history = messages(client, user, session["id"])
    assert [(m["role"], m["visibility"]) for m in history] == [
        ("user", "shared"),
        ("assistant", "private"),
        ("tool", "private"),
        ("assistant", "shared"),
    ]
    assert history[1]["tool_calls"][0]["name"] == "search"
    assert history[2]["metadata"]["status"] == "ok"
    assert "PELICAN" in history[2]["content"]  # the file's chunk was found
    assert history[3]["content"].strip()
    # One call to the model, after the search, with its results in a valid context.
    (sent,) = local_contexts
    assert template_violation(sent["messages"]) is None
    assert sent["messages"][-1]["role"] == "user" and "PELICAN" in sent["messages"][-1]["content"]


def test_the_local_models_tokens_stream_into_its_reply(client, held_client, user, make_agent):
    from tests.sse_client import open_stream
    from tests.test_event_streams import dispatch, held_turn

    session = start_session(client, user, agent=local_agent(make_agent, user, "ann"))
    turn_id = held_turn(held_client, user, session["id"], "Say hello.")
    stream = open_stream(client, user, f"/api/v1/turns/{turn_id}/events", tokens="true")
    next(stream)  # open: the worker sees that tokens were asked for
    dispatch(turn_id)
    events = stream.rest()
    assert events[-1].name == "end" and events[-1].data["status"] == "completed"
    reply = next(e.data for e in events if e.name == "message" and e.data["role"] == "assistant")
    deltas = [e.data["text"] for e in events if e.name == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == reply["content"]
    usage = next(e.data for e in events if e.name == "usage")
    assert usage["completion_tokens"] > 0
