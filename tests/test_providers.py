"""The provider layer against real HTTP: the scripted server of tests/fake_llm.py."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from models.providers import BUILTIN_PROVIDERS, INSTANT_PROVIDER, ModelPrice
from tests.fake_llm import error_reply, text_reply, tool_call_reply
from worker.providers import (
    ChatMessage,
    InstantProvider,
    LocalLlamaProvider,
    OpenAICompatProvider,
    ProviderError,
    RetryPolicy,
    ToolCall,
    ToolSpec,
    get_provider,
)
from worker.retry_after import parse_retry_after

KEY_ENV = "ROOMCAST_TEST_LLM_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]
SEARCH = ToolSpec(
    name="search",
    description="Search the user's files.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


@pytest.fixture
def config(fake_llm, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return fake_llm.provider_config(api_key_env=KEY_ENV)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def provider(config, sleeps):
    """A provider whose waits are recorded instead of slept."""
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=4.0, retry_after_max=10.0)
    return OpenAICompatProvider(config, retry_policy=policy, sleep=sleeps.append)


def fail(provider, **kwargs) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        provider.complete(HELLO, model="fake-model", **kwargs)
    return info.value


def test_reply_with_usage_and_the_key_from_the_environment(provider, fake_llm):
    fake_llm.reply("Hello!", usage=(12, 3))
    completion = provider.complete(HELLO, model="fake-model", temperature=0.2, max_tokens=50)
    assert completion.content == "Hello!" and completion.tool_calls == []
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    assert completion.usage.total_tokens == 15 and not completion.usage.estimated
    assert (completion.model, completion.provider, completion.attempts) == ("fake-model", "fake", 1)
    assert 0 <= completion.latency_ms < 5000
    sent = fake_llm.last
    assert sent.path == "/v1/chat/completions" and sent.authorization == f"Bearer {SECRET}"
    assert sent.json["model"] == "fake-model"
    assert sent.json["temperature"] == 0.2 and sent.json["max_tokens"] == 50
    assert sent.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    assert "tools" not in sent.json


def test_openai_account_variables_are_not_sent_to_providers(config, fake_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-the-environment")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-the-environment")
    fake_llm.reply()
    OpenAICompatProvider(config).complete(HELLO, model="fake-model")
    assert not {"openai-organization", "openai-project"} & set(fake_llm.last.headers)


def test_unset_parameters_are_not_sent(provider, fake_llm):
    fake_llm.reply()
    provider.complete(HELLO, model="fake-model")
    assert not {"temperature", "max_tokens", "tools"} & set(fake_llm.last.json)


def test_tool_calls_are_parsed(provider, fake_llm):
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}},
        # An older Ollama sends arguments as an object and no id.
        {"type": "function", "function": {"name": "file_read", "arguments": {"file_id": 7}}},
    ]
    fake_llm.then(text_reply(None, tool_calls=calls))
    completion = provider.complete(HELLO, model="fake-model", tools=[SEARCH])
    assert completion.content == "" and completion.finish_reason == "tool_calls"
    first, second = completion.tool_calls
    assert first == ToolCall(id="call_1", name="search", arguments="{}")
    assert second.name == "file_read" and json.loads(second.arguments) == {"file_id": 7}
    assert second.id.startswith("call_")
    assert fake_llm.last.tools == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the user's files.",
                "parameters": SEARCH.parameters,
            },
        }
    ]


def test_tool_call_history_is_sent_with_empty_string_content(provider, fake_llm):
    fake_llm.reply("Nothing found.")
    call = ToolCall(id="call_9", name="search", arguments='{"query": "invoice"}')
    provider.complete(
        [
            ChatMessage("user", "Find my invoice.", name="Ada Lovelace"),
            ChatMessage("assistant", None, name="Researcher", tool_calls=[call]),
            ChatMessage("tool", "no results", tool_call_id="call_9"),
        ],
        model="fake-model",
        tools=[SEARCH],
    )
    user, assistant, tool = fake_llm.last.messages
    assert user == {"role": "user", "content": "Find my invoice.", "name": "Ada_Lovelace"}
    assert assistant["content"] == "" and assistant["name"] == "Researcher"
    assert assistant["tool_calls"] == [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "search", "arguments": '{"query": "invoice"}'},
        }
    ]
    assert tool == {"role": "tool", "content": "no results", "tool_call_id": "call_9"}


def test_429_is_retried_after_exactly_what_retry_after_says(provider, fake_llm, sleeps):
    fake_llm.status(429, retry_after=2).reply("finally")
    completion = provider.complete(HELLO, model="fake-model")
    assert completion.content == "finally" and completion.attempts == 2
    assert sleeps == [2.0]
    assert len(fake_llm.requests) == 2


def test_5xx_is_retried_with_capped_jittered_backoff(provider, fake_llm, sleeps):
    fake_llm.status(500).status(503).reply("ok")
    completion = provider.complete(HELLO, model="fake-model")
    assert completion.content == "ok" and completion.attempts == 3
    assert len(sleeps) == 2 and all(0 <= wait <= 4.0 for wait in sleeps)
    assert sleeps[0] <= 1.0  # the first wait is at most twice the initial backoff


def test_retries_exhausted_on_5xx_is_unavailable(provider, fake_llm):
    fake_llm.status(500).status(502).status(503).reply("too late")
    error = fail(provider)
    assert error.code == "llm_unavailable" and error.retryable
    assert error.attempts == 3 == len(fake_llm.requests)  # max_retries=2: three requests
    assert "503" in error.message
    assert fake_llm.pending == 1


def test_retries_exhausted_on_429_is_rate_limited(provider, fake_llm, sleeps):
    for _ in range(3):
        fake_llm.status(429, "slow down", retry_after=1)
    error = fail(provider)
    assert error.code == "llm_rate_limited" and error.attempts == 3
    assert sleeps == [1.0, 1.0] and "slow down" in error.message


def test_a_retry_after_beyond_the_cap_is_not_waited_for(provider, fake_llm, sleeps):
    fake_llm.status(429, retry_after=3600).reply("never asked")
    error = fail(provider)
    assert error.code == "llm_rate_limited" and error.attempts == 1 and sleeps == []
    assert "3600" in error.message and error.retry_after == 3600


def test_max_retries_zero_makes_one_request(fake_llm, config):
    fake_llm.status(500).reply("unused")
    error = fail(get_provider(replace(config, max_retries=0)))
    assert error.code == "llm_unavailable" and error.attempts == 1


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after({"retry-after": soon}) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_timeouts_are_retried_then_reported(fake_llm, config):
    fake_llm.then(text_reply("slow", delay=3), text_reply("slow", delay=3))
    provider = get_provider(replace(config, timeout=0.3, max_retries=1))
    error = fail(provider)
    assert error.code == "llm_timeout" and error.retryable and error.attempts == 2
    assert "0.3 s" in error.message


def test_a_slow_reply_within_the_timeout_is_fine(fake_llm, config):
    fake_llm.then(text_reply("took a moment", delay=0.2))
    completion = get_provider(config).complete(HELLO, model="fake-model")
    assert completion.content == "took a moment" and completion.latency_ms >= 200


def test_connection_refused_is_unavailable(fake_llm, config):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = get_provider(replace(config, base_url=f"http://127.0.0.1:{port}/v1"))
    error = fail(provider)
    assert error.code == "llm_unavailable" and error.attempts == 3
    assert "cannot be reached" in error.message


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        ("{not json", "application/json", "not JSON"),
        ("<html>Bad gateway</html>", "text/html", "not JSON"),
        ("[1, 2]", "application/json", "expected a JSON object"),
        ('{"choices": []}', "application/json", "no choices"),
        ('{"error": {"message": "model crashed"}}', "application/json", "model crashed"),
        ('{"choices": [{"message": {"content": 5}}]}', "application/json", "not text"),
        (
            '{"choices": [{"message": {"content": "", "tool_calls": [{"function": {}}]}}]}',
            "application/json",
            "no function name",
        ),
    ],
)
def test_malformed_replies_are_bad_responses_and_not_retried(
    provider, fake_llm, body, content_type, fragment
):
    fake_llm.raw(body, content_type=content_type).reply("unused")
    error = fail(provider)
    assert error.code == "llm_bad_response" and not error.retryable
    assert error.attempts == 1 and len(fake_llm.requests) == 1
    assert fragment in error.message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_name_the_variable(provider, fake_llm, status):
    fake_llm.status(status, f"Incorrect API key provided: {SECRET}").reply("unused")
    error = fail(provider)
    assert error.code == "llm_auth_error" and not error.retryable and error.attempts == 1
    assert KEY_ENV in error.message and SECRET not in error.message


def test_missing_api_key_variable_is_an_auth_error_before_any_request(
    provider, fake_llm, monkeypatch
):
    monkeypatch.delenv(KEY_ENV)
    error = fail(provider)
    assert error.code == "llm_auth_error" and error.attempts == 0
    assert KEY_ENV in error.message and fake_llm.requests == []


def test_a_provider_without_key_variable_sends_a_placeholder(fake_llm):
    fake_llm.reply()
    get_provider(fake_llm.provider_config()).complete(HELLO, model="fake-model")
    assert fake_llm.last.authorization == "Bearer no-key"


@pytest.mark.parametrize(
    ("scripted", "code"),
    [
        (error_reply(400, "messages: field required"), "llm_bad_request"),
        (error_reply(422, "temperature must be <= 2"), "llm_bad_request"),
        (error_reply(404, "The model `gpt-9` does not exist"), "llm_model_unavailable"),
        (error_reply(404, "nope", code="model_not_found"), "llm_model_unavailable"),
        (error_reply(400, 'model "llama9" not found, try pulling it'), "llm_model_unavailable"),
        (error_reply(404, "Not Found"), "llm_bad_request"),
    ],
)
def test_client_errors_are_not_retried(provider, fake_llm, scripted, code):
    fake_llm.then(scripted).reply("unused")
    error = fail(provider)
    assert error.code == code and error.attempts == 1 and not error.retryable
    assert scripted.body["error"]["message"] in error.message


def test_a_model_the_config_does_not_list_is_refused_without_a_request(fake_llm, config):
    provider = get_provider(replace(config, models=("fake-model",)))
    with pytest.raises(ProviderError) as info:
        provider.complete(HELLO, model="other")
    assert info.value.code == "llm_model_unavailable" and "fake-model" in info.value.message
    assert fake_llm.requests == []


def test_api_key_never_appears_in_errors_or_logs(provider, fake_llm, caplog):
    caplog.set_level(logging.DEBUG)
    echo = f"bad key {SECRET}"
    fake_llm.status(500, echo).status(400, echo).status(429, echo, retry_after=0)
    fake_llm.status(429, echo, retry_after=0).status(429, echo, retry_after=0)
    fake_llm.raw(echo).reply("fine")
    errors = [fail(provider), fail(provider), fail(provider)]
    assert provider.complete(HELLO, model="fake-model").content == "fine"
    assert [e.code for e in errors] == ["llm_bad_request", "llm_rate_limited", "llm_bad_response"]
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert "***" in error.message
    assert caplog.records, "retries are logged"
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.__dict__) for record in caplog.records)


def test_missing_usage_is_estimated_and_says_so(provider, fake_llm):
    fake_llm.reply("A reply of some length.", usage=None)
    usage = provider.complete(HELLO, model="fake-model").usage
    assert usage.estimated
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_cost_from_the_price_table(fake_llm, config):
    priced = replace(config, prices={"fake-model": ModelPrice(Decimal("0.15"), Decimal("0.60"))})
    fake_llm.reply("priced", usage=(1000, 2000))
    completion = get_provider(priced).complete(HELLO, model="fake-model")
    price = priced.price(completion.model)
    assert price.cost(completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        Decimal("0.00135")
    )


def test_a_callable_script_answers_each_agent(fake_llm):
    fake_llm.respond_with(
        lambda request: "I am Bob." if "Bob" in request.system_prompt else tool_call_reply("search")
    )
    provider = get_provider(fake_llm.provider_config())
    ask = ChatMessage("user", "Who are you?")
    bob = provider.complete([ChatMessage("system", "You are Bob."), ask], model="m")
    other = provider.complete([ChatMessage("system", "You are Eve."), ask], model="m")
    assert bob.content == "I am Bob." and other.tool_calls[0].name == "search"


def test_an_unscripted_request_fails_loudly(fake_llm):
    error = fail(get_provider(fake_llm.provider_config()))
    assert error.code == "llm_bad_request" and "nothing scripted" in error.message


def test_instant_answers_any_model_at_once_without_network():
    provider = get_provider(BUILTIN_PROVIDERS[INSTANT_PROVIDER])
    assert isinstance(provider, InstantProvider)
    completion = provider.complete(HELLO, model="anything-at-all", tools=[SEARCH])
    assert completion.content and completion.tool_calls == []
    assert completion.finish_reason == "stop" and completion.provider == "instant"
    assert completion.model == "anything-at-all" and completion.latency_ms < 50
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    short = provider.complete(HELLO, model="x", max_tokens=2)
    assert short.finish_reason == "length" and short.usage.completion_tokens <= 2


def test_get_provider_builds_by_type_and_reuses_per_name(fake_llm):
    config = fake_llm.provider_config(name="cached")
    provider = get_provider(config)
    assert isinstance(provider, OpenAICompatProvider)
    assert get_provider(config) is provider
    assert get_provider(replace(config, timeout=1.0)) is not provider
    assert isinstance(get_provider(BUILTIN_PROVIDERS["local"]), LocalLlamaProvider)


def test_unknown_error_codes_are_refused():
    with pytest.raises(ValueError):
        ProviderError("llm_on_fire", "nope")


def test_a_forked_child_builds_its_own_providers(monkeypatch):
    from worker import providers

    # Isolated from the process's real cache, so the local model server stays where it is.
    monkeypatch.setattr(providers, "_providers", {})
    monkeypatch.setattr(providers, "_inherited", [])
    config = BUILTIN_PROVIDERS[INSTANT_PROVIDER]
    parent = get_provider(config)
    providers._after_fork_in_child()  # what os.fork() runs in the child
    assert get_provider(config) is not parent and providers._inherited == [parent]
