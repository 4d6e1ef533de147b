"""Providers streaming a reply's tokens (``on_delta``): the same Completion as without."""

import pytest

from models.providers import ProviderConfig
from tests.fake_llm import text_reply, tool_call_reply
from worker.providers import InstantProvider, get_provider
from worker.providers.base import ChatMessage

HELLO = [ChatMessage(role="user", content="hi")]


@pytest.fixture
def provider(fake_llm):
    return get_provider(fake_llm.provider_config())


def test_a_streamed_reply_is_the_reply_of_a_plain_call(provider, fake_llm):
    text = "The quick brown fox jumps over the lazy dog, twice."
    fake_llm.reply(text).reply(text)
    plain = provider.complete(HELLO, model="fake-model")
    pieces = []
    streamed = provider.complete(HELLO, model="fake-model", on_delta=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == text
    assert (streamed.content, streamed.finish_reason, streamed.usage) == (
        plain.content,
        plain.finish_reason,
        plain.usage,
    )
    assert not streamed.usage.estimated  # the usage came in the last chunk
    body = fake_llm.last.json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_are_assembled(provider, fake_llm):
    fake_llm.then(tool_call_reply("search", {"query": "budget 2026"}, call_id="call_1"))
    pieces = []
    completion = provider.complete(HELLO, model="fake-model", on_delta=pieces.append)
    assert pieces == []  # no text, only the call
    assert completion.finish_reason == "tool_calls"
    [call] = completion.tool_calls
    assert (call.id, call.name, call.arguments) == ("call_1", "search", '{"query": "budget 2026"}')


def test_a_stream_cut_off_is_retried_and_its_text_voided(provider, fake_llm):
    fake_llm.then(text_reply("one two three four five six seven eight", cut_after=2))
    fake_llm.reply("one two three four five six seven eight")
    pieces = []
    completion = provider.complete(HELLO, model="fake-model", on_delta=pieces.append)
    assert completion.attempts == 2
    void = pieces.index(None)
    assert void == 2 and "".join(pieces[void + 1 :]) == completion.content


def test_the_instant_provider_streams_its_fixed_reply():
    config = ProviderConfig(name="instant", type="instant", default_model="instant")
    pieces = []
    completion = InstantProvider(config).complete(HELLO, model="x", on_delta=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == completion.content
