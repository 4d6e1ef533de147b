"""Orchestration through a real worker against a scripted OpenAI-compatible server over HTTP."""

import re
import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from models import Message, Turn, UsageRecord
from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
from tests.helpers import messages, post_turn, start_session, wait_done

pytestmark = pytest.mark.usefixtures("celery_worker")

SPEAKER = re.compile(r"You are (\w+)")


def answer_as_speaker(request) -> str:
    """Reply as the agent the system prompt addresses (room prompts name every speaker)."""
    match = SPEAKER.search(request.system_prompt)
    return f"{match.group(1) if match else 'someone'} here."


@pytest.fixture
def fake_agent(make_agent):
    def make(owner, name, **fields):
        fields.setdefault("system_prompt", f"You are {name}.")
        return make_agent(owner, name=name, provider=FAKE_PROVIDER, model=FAKE_MODEL, **fields)

    return make


def chat_requests(fake_llm):
    return [r for r in fake_llm.requests if r.path.endswith("/chat/completions")]


def test_standalone_turn_sends_prompt_and_history_and_records_usage(
    client, user, fake_agent, fake_llm, db
):
    fake_llm.reply("First answer.", usage=(40, 10)).reply("Second answer.", usage=(60, 5))
    agent = fake_agent(user, "ann", system_prompt="You are ann, terse.", temperature=0.3)
    session = start_session(client, user, agent=agent)
    first = wait_done(client, user, post_turn(client, user, session["id"], "Hello?").json["id"])
    second = wait_done(client, user, post_turn(client, user, session["id"], "And?").json["id"])
    assert first["status"] == second["status"] == "completed"

    sent = fake_llm.requests[-1].json
    assert sent["model"] == FAKE_MODEL and sent["temperature"] == 0.3
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "You are ann, terse."),
        ("user", "Hello?"),
        ("assistant", "First answer."),
        ("user", "And?"),
    ]
    assert [m["content"] for m in messages(client, user, session["id"])] == [
        "Hello?",
        "First answer.",
        "And?",
        "Second answer.",
    ]

    rows = db.scalars(
        select(UsageRecord).where(UsageRecord.session_id == session["id"]).order_by(UsageRecord.id)
    ).all()
    assert [(r.prompt_tokens, r.completion_tokens, r.total_tokens) for r in rows] == [
        (40, 10, 50),
        (60, 5, 65),
    ]
    assert all(
        r.provider == FAKE_PROVIDER
        and r.model == FAKE_MODEL
        and r.agent_id == agent.id
        and r.room_id is None
        and r.step == 1
        and r.attempt == 1
        for r in rows
    )
    # Prices are per million tokens: 40 x 1.25 + 10 x 2.50 = 75 micro-dollars.
    assert rows[0].cost == Decimal("0.000075")
    assert second["usage"] == {
        "prompt_tokens": 60,
        "completion_tokens": 5,
        "total_tokens": 65,
        "cost": "0.00008750",
    }


def test_sequential_room_each_agent_sees_the_replies_before_it(
    client, user, fake_agent, make_room, fake_llm, db
):
    fake_llm.respond_with(answer_as_speaker)
    agents = [fake_agent(user, n) for n in ("ann", "bob", "cy")]
    room = make_room(user, agents, mode="sequential", instructions="Plan a picnic.")
    session = start_session(client, user, room=room)
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "Where shall we go?").json["id"]
    )
    assert turn["status"] == "completed"
    replies = [m for m in messages(client, user, session["id"]) if m["role"] == "assistant"]
    assert [m["content"] for m in replies] == ["ann here.", "bob here.", "cy here."]
    requests = chat_requests(fake_llm)
    assert len(requests) == 3
    cy_messages = requests[2].messages
    system = cy_messages[0]["content"]
    assert "You are cy." in system and "Plan a picnic." in system and "ann, bob" in system
    # The user's message and the replies before cy's are one user message: roles alternate.
    assert [(m["role"], m["content"]) for m in cy_messages[1:]] == [
        ("user", "Where shall we go?\n\n[ann]: ann here.\n\n[bob]: bob here.")
    ]
    rows = db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn["id"])).all()
    assert sorted((r.step, r.agent_id, r.room_id) for r in rows) == [
        (1, agents[0].id, room.id),
        (2, agents[1].id, room.id),
        (3, agents[2].id, room.id),
    ]
    total = sum(r.total_tokens for r in rows)
    assert turn["usage"]["total_tokens"] == total
    assert Decimal(turn["usage"]["cost"]) == sum(r.cost for r in rows)
    by_agent = turn["progress"]["usage_by_agent"]
    assert {
        int(k): (v["calls"], v["prompt_tokens"] + v["completion_tokens"], Decimal(v["cost"]))
        for k, v in by_agent.items()
    } == {r.agent_id: (1, r.total_tokens, r.cost) for r in rows}


def test_round_robin_rotates_across_turns(client, user, fake_agent, make_room, fake_llm):
    fake_llm.respond_with(answer_as_speaker)
    agents = [fake_agent(user, n) for n in ("ann", "bob", "cy")]
    session = start_session(client, user, room=make_room(user, agents, mode="round_robin"))
    speakers = []
    for _ in range(4):
        turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
        speakers += [s["name"] for s in turn["progress"]["speakers"]]
    assert speakers == ["ann", "bob", "cy", "ann"]


def test_mention_mode_answers_addressed_agents_in_order(
    client, user, fake_agent, make_room, fake_llm
):
    fake_llm.respond_with(answer_as_speaker)
    ann, bob, cy = (fake_agent(user, n) for n in ("ann", "bob", "cy"))
    room = make_room(
        user, [ann, bob, cy], mode="mention", orchestration={"default_agent_id": cy.id}
    )
    session = start_session(client, user, room=room)
    turn = wait_done(
        client, user, post_turn(client, user, session["id"], "@bob then @ann, please").json["id"]
    )
    assert [s["name"] for s in turn["progress"]["speakers"]] == ["bob", "ann"]
    turn = wait_done(client, user, post_turn(client, user, session["id"], "anyone?").json["id"])
    assert [s["name"] for s in turn["progress"]["speakers"]] == ["cy"]  # the default speaker


def run_supervised_turn(client, user, fake_agent, make_room, fake_llm, pick, max_rounds):
    """A supervisor room of ann and bob whose selector answers ``pick(system_prompt)``."""

    def respond(request):
        if "You coordinate" in request.system_prompt:
            return pick(request.system_prompt)
        return answer_as_speaker(request)

    fake_llm.respond_with(respond)
    agents = [fake_agent(user, n) for n in ("ann", "bob")]
    room = make_room(
        user,
        agents,
        mode="supervisor",
        max_rounds=max_rounds,
        orchestration={"selector_provider": FAKE_PROVIDER, "selector_model": FAKE_MODEL},
    )
    session = start_session(client, user, room=room)
    turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    return session, turn


def test_supervisor_picks_speakers_until_done(client, user, fake_agent, make_room, fake_llm):
    session, turn = run_supervised_turn(
        client,
        user,
        fake_agent,
        make_room,
        fake_llm,
        max_rounds=5,
        pick=lambda prompt: "DONE" if "bob answered" in prompt else "bob",
    )
    assert turn["status"] == "completed" and turn["stop_reason"] == "selector_done"
    assert [s["name"] for s in turn["progress"]["speakers"]] == ["bob"]
    history = messages(client, user, session["id"])
    assert [(m["role"], m["visibility"]) for m in history] == [
        ("user", "shared"),
        ("system", "private"),
        ("assistant", "shared"),
        ("system", "private"),
    ]


def test_supervisor_invalid_picks_and_the_round_bound(
    client, user, fake_agent, make_room, fake_llm
):
    # Never a member, never DONE.
    _, turn = run_supervised_turn(
        client,
        user,
        fake_agent,
        make_room,
        fake_llm,
        max_rounds=3,
        pick=lambda prompt: "Nobody in particular.",
    )
    # Invalid picks fall to whoever has not spoken, then end the turn: the bound always holds.
    assert turn["status"] == "completed"
    assert [s["name"] for s in turn["progress"]["speakers"]] == ["ann", "bob"]
    assert turn["stop_reason"] == "selector_done"


def test_private_items_stay_with_their_agent(client, user, fake_agent, make_room, fake_llm, db):
    fake_llm.respond_with(answer_as_speaker)
    ann, bob = fake_agent(user, "ann"), fake_agent(user, "bob")
    room = make_room(user, [ann, bob], mode="sequential")
    session = start_session(client, user, room=room)
    first = wait_done(
        client, user, post_turn(client, user, session["id"], "Look it up.").json["id"]
    )
    # ann's earlier tool call and its result, private to her.
    db.add_all(
        [
            Message(
                session_id=session["id"],
                turn_id=first["id"],
                step=10,
                role="assistant",
                agent_id=ann.id,
                visibility="private",
                content="",
                tool_calls=[{"id": "call_1", "name": "search", "arguments": "{}"}],
            ),
            Message(
                session_id=session["id"],
                turn_id=first["id"],
                step=11,
                role="tool",
                agent_id=ann.id,
                visibility="private",
                tool_call_id="call_1",
                content="SECRET-RESULT-123",
            ),
        ]
    )
    db.commit()
    fake_llm.requests.clear()
    wait_done(client, user, post_turn(client, user, session["id"], "What did you find?").json["id"])
    ann_request, bob_request = chat_requests(fake_llm)
    assert "SECRET-RESULT-123" in ann_request.body.decode()
    ann_tool = [m for m in ann_request.messages if m["role"] == "tool"]
    assert ann_tool == [{"role": "tool", "content": "SECRET-RESULT-123", "tool_call_id": "call_1"}]
    assert "SECRET-RESULT-123" not in bob_request.body.decode()
    assert all(m["role"] != "tool" and not m.get("tool_calls") for m in bob_request.messages)


@pytest.mark.parametrize(
    ("script", "code"),
    [
        (lambda f: f.status(401), "llm_auth_error"),
        (lambda f: f.status(500).status(502).status(503), "llm_unavailable"),
        (lambda f: f.raw("{not json"), "llm_bad_response"),
        (lambda f: f.status(404, code="model_not_found"), "llm_model_unavailable"),
    ],
)
def test_provider_errors_fail_the_turn_with_a_code(
    client, user, fake_agent, fake_llm, db, script, code
):
    script(fake_llm)
    session = start_session(client, user, agent=fake_agent(user, "ann"))
    turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    assert turn["status"] == "failed" and turn["stop_reason"] == code
    assert turn["error"]["code"] == code and turn["error"]["message"]
    assert turn["message_ids"] == []
    assert db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn["id"])).all() == []


def test_rate_limit_then_success_completes_with_one_usage_row(
    client, user, fake_agent, fake_llm, db
):
    fake_llm.status(429, retry_after=0).reply("Finally.", usage=(5, 2))
    session = start_session(client, user, agent=fake_agent(user, "ann"))
    turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    assert turn["status"] == "completed" and turn["usage"]["total_tokens"] == 7
    assert len(chat_requests(fake_llm)) == 2
    assert len(db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn["id"])).all()) == 1


def _cancel_during_first_call(client, user, session_id, fake_llm, progress=None) -> int:
    """Post a turn and cancel it while its first LLM call is in flight; returns its id.

    ``progress``: a dict to fill with the turn's progress at the cancel."""
    progress = {} if progress is None else progress
    turn_id = post_turn(client, user, session_id).json["id"]
    deadline = time.monotonic() + 10
    while not chat_requests(fake_llm) and time.monotonic() < deadline:
        time.sleep(0.02)
    r = client.post(f"/api/v1/turns/{turn_id}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    # What a poller saw during the call (the cancel answers with the turn as it was ended).
    progress.update(r.json["progress"])
    return turn_id


def test_cancel_running_turn_stops_at_the_next_step(
    client, user, fake_agent, make_room, fake_llm, db
):
    fake_llm.reply("ann's slow reply", delay=1.5).reply("bob must never be asked")
    ann, bob = fake_agent(user, "ann"), fake_agent(user, "bob")
    session = start_session(client, user, room=make_room(user, [ann, bob]))
    during = {}
    turn_id = _cancel_during_first_call(client, user, session["id"], fake_llm, during)
    # A room's plan is written before its first call: pollers see who speaks, and who next.
    assert [(e["name"], e["status"]) for e in during["speakers"]] == [
        ("ann", "running"),
        ("bob", "pending"),
    ]
    time.sleep(2.5)  # the in-flight call returns; nothing may start after the cancel
    assert len(chat_requests(fake_llm)) == 1
    turn = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
    assert turn["status"] == "cancelled" and turn["message_ids"] == []
    # The call that was in flight was billed, so it is on record.
    rows = db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn_id)).all()
    assert len(rows) == 1 and turn["usage"]["total_tokens"] == rows[0].total_tokens
    assert turn["progress"]["usage_by_agent"][str(ann.id)]["calls"] == 1
    db.expire_all()
    assert db.get(Turn, turn_id).status == "cancelled"


def test_cancel_during_the_last_call_writes_no_reply(client, user, fake_agent, fake_llm, db):
    fake_llm.reply("a reply nobody may see", delay=1.5, usage=(7, 3))
    session = start_session(client, user, agent=fake_agent(user, "ann"))
    turn_id = _cancel_during_first_call(client, user, session["id"], fake_llm)
    deadline = time.monotonic() + 10
    while not db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn_id)).all():
        assert time.monotonic() < deadline, "the in-flight call was never recorded"
        time.sleep(0.05)
    time.sleep(0.2)
    turn = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
    # The ending step's reply is fenced like any other: billed, but not written.
    assert turn["status"] == "cancelled" and turn["message_ids"] == []
    assert turn["usage"]["total_tokens"] == 10
    assert turn["progress"]["speakers"][0]["message_id"] is None


def test_supervisor_that_never_says_done_is_bounded(client, user, fake_agent, make_room, fake_llm):
    _, turn = run_supervised_turn(
        client, user, fake_agent, make_room, fake_llm, max_rounds=3, pick=lambda prompt: "ann"
    )
    assert turn["stop_reason"] == "max_rounds"
    assert [s["name"] for s in turn["progress"]["speakers"]] == ["ann", "ann", "ann"]
