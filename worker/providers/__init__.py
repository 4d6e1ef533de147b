"""LLM providers: one interface (``base``) and one class per provider type.

``get_provider(config)`` returns the process's provider for a catalog entry
(``Settings.providers()[name]``), building it on first use: ``openai`` ->
:class:`OpenAICompatProvider`, ``llamacpp`` -> :class:`LocalLlamaProvider`, ``instant`` ->
:class:`InstantProvider`. Providers are thread-safe and reused, so HTTP connections are pooled;
the local model's server is shared by the host's processes (worker/local_server.py).
"""

from __future__ import annotations

import os
import threading

from models.providers import ProviderConfig

from .base import (
    ERROR_CODES,
    ChatMessage,
    Completion,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
)
from .instant import InstantProvider
from .local_llama import LocalLlamaProvider
from .openai_compat import OpenAICompatProvider, RetryPolicy

PROVIDER_CLASSES: dict[str, type] = {
    "openai": OpenAICompatProvider,
    "llamacpp": LocalLlamaProvider,
    "instant": InstantProvider,
}

_lock = threading.Lock()
_providers: dict[str, tuple[ProviderConfig, Provider]] = {}
# Providers inherited across a fork. Never released: the parent's connection pools belong to
# the parent.
_inherited: list[Provider] = []


def get_provider(config: ProviderConfig) -> Provider:
    """This process's provider for ``config``, built on first use (cached by provider name)."""
    with _lock:
        cached = _providers.get(config.name)
        if cached is not None and cached[0] == config:
            return cached[1]
        # First use, or the catalog entry changed (tests, a reloaded file): build anew.
        provider = PROVIDER_CLASSES[config.type](config)
        _providers[config.name] = (config, provider)
        return provider


def clear_providers() -> None:
    """Forget every cached provider (tests; a running local model server stops when its
    provider is garbage collected)."""
    with _lock:
        _providers.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _inherited.extend(provider for _, provider in _providers.values())
    _providers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "ERROR_CODES",
    "ChatMessage",
    "Completion",
    "InstantProvider",
    "LocalLlamaProvider",
    "OpenAICompatProvider",
    "Provider",
    "ProviderError",
    "RetryPolicy",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "clear_providers",
    "get_provider",
]
