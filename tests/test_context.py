"""What an agent's prompt holds when the history is longer than its budget."""

import random
from functools import partial

from tests.helpers import seed_turn
from worker.chat_rules import EARLIER
from worker.context import HistoryItem, Speaker, _as_chat, build_context, fit_history
from worker.providers.base import estimate_prompt_tokens

# Every message of these sessions is before the turn that reads them.
SO_FAR = {"turn_id": 2**62}


def speaker(agent_id, name="ann"):
    return Speaker(
        id=agent_id,
        name=name,
        provider="instant",
        model="m",
        system_prompt=f"You are {name}.",
        temperature=None,
        max_tokens=None,
        tools=(),
    )


def test_budget_keeps_the_newest_and_never_splits_a_tool_call(db, user, make_agent):
    agent = make_agent(user)
    long = "word " * 400  # about 500 tokens
    session_id = seed_turn(
        db,
        user,
        agent,
        [
            {"role": "user", "content": "oldest " + long},
            {"role": "assistant", "agent_id": agent.id, "content": "old reply"},
            {
                "role": "assistant",
                "agent_id": agent.id,
                "visibility": "private",
                "content": "",
                "tool_calls": [{"id": "c1", "name": "search", "arguments": "{}"}],
            },
            {
                "role": "tool",
                "agent_id": agent.id,
                "visibility": "private",
                "tool_call_id": "c1",
                "content": "result " + long,
            },
            {"role": "user", "content": "newest question"},
        ],
    )
    context = partial(
        build_context,
        db,
        session_id,
        speaker(agent.id),
        instructions="",
        names={agent.id: "ann"},
        **SO_FAR,
    )
    full = context(budget_tokens=100_000)
    # The reply and the tool call that follows it are one assistant message (roles alternate).
    assert [m.role for m in full] == ["system", "user", "assistant", "tool", "user"]
    assert full[2].content == "old reply" and [c.id for c in full[2].tool_calls] == ["c1"]

    # Room for the newest messages and the tool call with its result, not for the oldest one;
    # the history then starts with the agent's reply, so a user message frames it.
    cut = context(budget_tokens=600)
    assert [m.role for m in cut] == ["system", "user", "assistant", "tool", "user"]
    assert cut[1].content == EARLIER
    assert cut[2].content == "old reply" and cut[2].tool_calls and cut[3].tool_call_id == "c1"

    # Too small for the pair: both go, never the call without its result.
    tiny = build_context(
        db,
        session_id,
        speaker(agent.id),
        instructions="",
        names={agent.id: "ann"},
        budget_tokens=50,
        **SO_FAR,
    )
    assert [m.role for m in tiny] == ["system", "user"]
    assert tiny[-1].content == "newest question"


def test_room_context_names_speakers_and_layers_instructions(db, user, make_agent):
    ann, bob = make_agent(user, name="ann"), make_agent(user, name="bob")
    session_id = seed_turn(
        db,
        user,
        ann,
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "agent_id": bob.id, "content": "bob speaking"},
            {
                "role": "assistant",
                "agent_id": bob.id,
                "visibility": "private",
                "content": "bob's secret",
            },
        ],
    )
    context = build_context(
        db,
        session_id,
        speaker(ann.id),
        instructions="Be brief.",
        names={ann.id: "ann", bob.id: "bob"},
        budget_tokens=4000,
        **SO_FAR,
    )
    assert context[0].role == "system"
    assert context[0].content.startswith("You are ann.") and "Be brief." in context[0].content
    assert "bob" in context[0].content
    # The user's message and bob's reply are one user message: roles alternate.
    assert [(m.role, m.content) for m in context[1:]] == [("user", "hi\n\n[bob]: bob speaking")]


def _reference_fit(history, speaker_id, names, budget):
    """The definition fit_history implements, written plainly (oldest first, unit by unit)."""
    messages = [_as_chat(item, speaker_id, names) for item in reversed(history)]
    units = []
    for message in messages:
        if message.role == "tool" and units and units[-1][0].tool_calls:
            units[-1].append(message)
        else:
            units.append([message])
    while units and units[0][0].role == "tool":
        units.pop(0)
    kept = []
    for unit in reversed(units):
        cost = estimate_prompt_tokens(unit)
        if kept and cost > budget:
            break
        kept.append(unit)
        budget -= cost
    return [message for unit in reversed(kept) for message in unit]


def test_fit_history_matches_its_definition_on_random_histories():
    rng = random.Random(7)
    me, other = 1, 2
    names = {me: "ann", other: "bob"}
    for _ in range(500):
        history = []
        for index in range(rng.randint(0, 30)):
            kind = rng.choice(["user", "mine", "theirs", "call", "result", "result"])
            content = "x" * rng.choice([0, 3, 40, 400])
            role = {"user": "user", "result": "tool"}.get(kind, "assistant")
            agent_id = {"user": None, "theirs": other}.get(kind, me)
            calls = [{"id": "c", "name": "search", "arguments": "{}"}] if kind == "call" else None
            call_id = "c" if kind == "result" else None
            history.append(HistoryItem(index, role, agent_id, content, calls, call_id))
        history.reverse()  # newest first, as the query returns it
        budget = rng.choice([0, 20, 150, 600, 10_000])
        assert fit_history(history, me, names, budget) == _reference_fit(history, me, names, budget)


def test_a_turn_never_reads_messages_posted_after_its_own(
    client, settings, user, make_agent, fake_llm, celery_worker
):

    from tests.conftest import FAKE_MODEL, FAKE_PROVIDER
    from tests.helpers import accept_undispatched, start_session, wait_done
    from worker import app as celery_app
    from worker.execution import execute_turn

    agent = make_agent(user, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    session = start_session(client, user, agent=agent, multitask="enqueue")
    # Three turns accepted before any worker runs: the first queued, the others behind it.
    first, second, third = (
        accept_undispatched(settings, user, session["id"], text)
        for text in ("first question", "second question", "third question")
    )
    fake_llm.respond_with(lambda request: f"answer {len(fake_llm.requests)}")
    execute_turn(first, settings, celery_app)
    for turn_id in (second, third):
        assert wait_done(client, user, turn_id)["status"] == "completed"

    seen = [" ".join(m["content"] for m in r.messages[1:]) for r in fake_llm.requests]
    assert "first question" in seen[0] and "second" not in seen[0] and "third" not in seen[0]
    assert "second question" in seen[1] and "answer 1" in seen[1] and "third" not in seen[1]
    assert "third question" in seen[2] and "answer 2" in seen[2]
