"""conform(): every context in the shape strict chat templates accept, checked by the test
server's own checker (tests/fake_llm.py)."""

import random

import pytest

from tests.fake_llm import template_violation
from worker.chat_rules import AGAIN, EARLIER, FRAMING_TOKENS, conform
from worker.context import HistoryItem, fit_history
from worker.providers import ProviderError, get_provider
from worker.providers.base import ChatMessage, ToolCall, estimate_prompt_tokens
from worker.providers.openai_compat import request_body


def wire(messages):
    """The messages as the provider sends them."""
    return request_body(messages, model="m", tools=None, temperature=None, max_tokens=None)[
        "messages"
    ]


def valid(messages):
    violation = template_violation(wire(messages))
    assert violation is None, (violation, shape(messages))
    return messages


def shape(messages):
    return [(m.role, m.content) for m in messages]


def system(text="You are ann."):
    return ChatMessage("system", text)


def user(text):
    return ChatMessage("user", text)


def mine(text, *call_ids):
    calls = [ToolCall(i, "search", "{}") for i in call_ids] or None
    return ChatMessage("assistant", text, tool_calls=calls)


def result(call_id, text="found"):
    return ChatMessage("tool", text, tool_call_id=call_id)


def test_a_valid_context_passes_through_unchanged():
    messages = [system(), user("hi"), mine("hello"), user("and?")]
    out = valid(conform(messages))
    assert out == messages and all(a is b for a, b in zip(out, messages, strict=True))


def test_one_system_message_and_only_first():
    out = valid(conform([system("a"), system("b"), user("hi"), system("note"), user("more")]))
    assert shape(out) == [("system", "a\n\nb"), ("user", "hi\n\nnote\n\nmore")]


def test_a_room_of_three_is_one_user_message_between_the_speakers_replies():
    # ann's view: the user, bob and cy (as user messages), her reply, then bob again.
    messages = [
        system(),
        user("Where shall we go?"),
        user("[bob]: The beach."),
        user("[cy]: The hills."),
        mine("The lake."),
        user("[bob]: Fine by me."),
    ]
    out = valid(conform(messages))
    assert shape(out) == [
        ("system", "You are ann."),
        ("user", "Where shall we go?\n\n[bob]: The beach.\n\n[cy]: The hills."),
        ("assistant", "The lake."),
        ("user", "[bob]: Fine by me."),
    ]


def test_a_speaker_speaking_again_is_framed_not_continued():
    # A one-member room with max_rounds 3: the third call sees two replies of its own.
    out = valid(conform([system(), user("Tell me a joke."), mine("One."), mine("Two.")]))
    assert shape(out) == [
        ("system", "You are ann."),
        ("user", "Tell me a joke."),
        ("assistant", "One.\n\nTwo."),
        ("user", AGAIN),
    ]
    # The second call: its one reply stays its own, and it is asked for something new.
    out = valid(conform([system(), user("@ben what is 2+2?"), mine("4")]))
    assert shape(out)[2:] == [("assistant", "4"), ("user", AGAIN)]


def test_a_one_member_room_speaking_three_times():
    history = [system(), user("Count.")]
    for reply in ("one", "two", "three"):
        out = valid(conform(history))
        assert out[-1].role == "user"
        history.append(mine(reply))
    out = valid(conform(history))
    assert shape(out)[1:] == [
        ("user", "Count."),
        ("assistant", "one\n\ntwo\n\nthree"),
        ("user", AGAIN),
    ]


def test_tool_call_units_are_kept_whole():
    messages = [
        system(),
        user("Find it."),
        mine("", "c1", "c2"),
        result("c2", "two"),
        result("c1", "one"),
        mine("Found both."),
        user("Thanks."),
    ]
    assert valid(conform(messages)) == messages
    # Ending on the results: the model answers after them.
    assert valid(conform(messages[:5])) == messages[:5]


def test_a_reply_before_a_tool_call_merges_into_it():
    out = valid(
        conform([system(), user("Go."), mine("Let me look."), mine("", "c1"), result("c1")])
    )
    assert [m.role for m in out] == ["system", "user", "assistant", "tool"]
    assert out[2].content == "Let me look." and [c.id for c in out[2].tool_calls] == ["c1"]


def test_truncated_history_starting_with_an_assistant_is_framed():
    out = valid(conform([system(), mine("Earlier reply."), user("Next?")]))
    assert shape(out) == [
        ("system", "You are ann."),
        ("user", EARLIER),
        ("assistant", "Earlier reply."),
        ("user", "Next?"),
    ]
    out = valid(conform([system(), mine("", "c1"), result("c1"), user("So?")]))
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "user"]


def test_tool_results_without_their_call_are_dropped():
    # Cut off from their call by the history window, or answering a call not right before.
    out = valid(conform([system(), result("c0"), user("Hi."), result("c9"), mine("Hello.")]))
    assert shape(out)[1:] == [("user", "Hi."), ("assistant", "Hello."), ("user", AGAIN)]
    out = valid(conform([system(), user("Go."), mine("", "c1"), result("c1"), result("c1")]))
    assert [m.role for m in out] == ["system", "user", "assistant", "tool"]  # answered once
    out = valid(
        conform([system(), user("Go."), mine("", "c1"), result("c1"), user("Hm."), result("c1")])
    )
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "user"]


def test_a_tool_call_without_results_is_not_sent_as_one():
    out = valid(conform([system(), user("Go."), mine("Looking.", "c1"), user("Well?")]))
    assert shape(out)[1:] == [("user", "Go."), ("assistant", "Looking."), ("user", "Well?")]
    assert out[2].tool_calls is None
    # Nothing said besides the call: nothing left to send.
    out = valid(conform([system(), user("Go."), mine("", "c1"), user("Well?")]))
    assert shape(out)[1:] == [("user", "Go.\n\nWell?")]
    # Only the answered calls of a message are kept.
    out = valid(conform([system(), user("Go."), mine("", "c1", "c2"), result("c2"), user("?")]))
    assert [c.id for c in out[2].tool_calls] == ["c2"] and out[3].tool_call_id == "c2"


def test_the_input_is_not_modified():
    messages = [system(), user("a"), user("b"), mine("x"), mine("", "c1", "c2"), result("c1")]
    before = [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in messages]
    conform(messages)
    assert [(m.role, m.content, m.tool_calls, m.tool_call_id) for m in messages] == before


def test_nothing_after_the_system_message_is_left_as_it_is():
    assert shape(conform([system()])) == [("system", "You are ann.")]
    assert conform([]) == []


@pytest.mark.parametrize(
    ("messages", "violation"),
    [
        ([user("a"), mine("b"), mine("c")], "Cannot have 2 or more assistant messages"),
        ([user("a"), user("b")], "Conversation roles must alternate"),
        ([system(), mine("a"), user("b")], "Conversation roles must alternate"),
        ([user("a"), mine("b")], "prefill"),
        ([user("a"), system("b")], "System message must be at the beginning"),
        ([system()], "No user query found"),
        ([user("a"), mine("", "c1"), user("b")], "did not have response messages: c1"),
        ([user("a"), result("c1")], "must be a response to a preceeding message"),
    ],
)
def test_the_checker_names_the_rule(messages, violation):
    assert violation in template_violation(wire(messages))


ROLES = ["user", "user", "theirs", "mine", "mine", "call", "result", "system"]


def random_context(rng):
    messages = [system()]
    for index in range(rng.randint(0, 14)):
        kind = rng.choice(ROLES)
        text = rng.choice(["", f"m{index}", f"message {index} " * 5])
        if kind == "user":
            messages.append(user(text or f"u{index}"))
        elif kind == "theirs":
            messages.append(user(f"[bob]: {text}"))
        elif kind == "mine":
            messages.append(mine(text))
        elif kind == "call":
            ids = [f"c{rng.randint(0, 3)}" for _ in range(rng.randint(1, 2))]
            messages.append(mine(text, *dict.fromkeys(ids)))
        elif kind == "result":
            messages.append(result(f"c{rng.randint(0, 3)}", text))
        else:
            messages.append(ChatMessage("system", text))
    last = f"the user's last message {rng.random()}"
    messages.insert(rng.randint(1, len(messages)), user(last))
    return messages, last


def test_random_contexts_always_pass_the_checker():
    rng = random.Random(12)
    for _ in range(500):
        messages, last = random_context(rng)
        out = valid(conform(messages))
        assert any(m.role == "user" and last in (m.content or "") for m in out)
        assert estimate_prompt_tokens(out) <= estimate_prompt_tokens(messages) + FRAMING_TOKENS
        assert conform(out) == out  # already conforming: nothing more to do


def test_build_context_keeps_within_the_budget_and_the_rules():
    rng = random.Random(3)
    me, other = 1, 2
    names = {me: "ann", other: "bob"}
    for _ in range(200):
        history = []
        for index in range(rng.randint(1, 25)):
            kind = rng.choice(["user", "mine", "theirs", "call", "result"])
            content = "x" * rng.choice([0, 3, 40, 400])
            role = {"user": "user", "result": "tool"}.get(kind, "assistant")
            agent_id = {"user": None, "theirs": other}.get(kind, me)
            calls = [{"id": "c", "name": "search", "arguments": "{}"}] if kind == "call" else None
            history.append(
                HistoryItem(
                    index, role, agent_id, content, calls, "c" if kind == "result" else None
                )
            )
        history.append(HistoryItem(99, "user", None, "the question", None, None))
        history.reverse()
        budget = rng.choice([200, 600, 2000])
        fitted = fit_history(history, me, names, budget - FRAMING_TOKENS)
        out = valid(conform([system(), *fitted]))
        if estimate_prompt_tokens(fitted[-1:]) <= budget - FRAMING_TOKENS:
            assert estimate_prompt_tokens(out[1:]) <= budget


def test_the_test_server_refuses_an_invalid_context_like_a_strict_template(fake_llm):
    provider = get_provider(fake_llm.provider_config())
    fake_llm.reply("Only for a valid context.")
    twice = [system(), user("Hi."), mine("One."), mine("Two.")]
    with pytest.raises(ProviderError) as info:
        provider.complete(twice, model="m")
    assert info.value.code == "llm_bad_request"
    assert "Cannot have 2 or more assistant messages at the end of the list" in info.value.message
    assert fake_llm.pending == 1  # refused before the script was reached
    assert provider.complete(conform(twice), model="m").content == "Only for a valid context."
    # A test of the HTTP layer may send one on purpose.
    fake_llm.accept_invalid_contexts().reply("Continued.")
    assert provider.complete(twice, model="m").content == "Continued."
