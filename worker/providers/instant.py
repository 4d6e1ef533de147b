"""The ``instant`` provider: a fixed short reply at once, for tests and benchmarks.

It makes no network call and accepts any model name, so it measures Roomcast itself (queueing,
claiming, writing replies, recording usage) without an LLM's latency or cost. Its usage figures
are estimated from the text, so usage accounting has something plausible to add up. It never
calls tools and is never the default provider.
"""

from __future__ import annotations

import time

from models.providers import ProviderConfig

from .base import (
    ChatMessage,
    Completion,
    OnDelta,
    ToolSpec,
    Usage,
    check_model,
    elapsed_ms,
    estimate_prompt_tokens,
    estimate_tokens,
)

REPLY = "This is an instant reply from Roomcast's benchmark provider."
# A streamed reply comes in this many pieces.
STREAM_PIECES = 4


def pieces(text: str, count: int = STREAM_PIECES) -> list[str]:
    """``text`` cut at word boundaries into at most ``count`` pieces that join back to it."""
    words = text.split(" ")
    size = max(1, -(-len(words) // count))
    chunks = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [chunk + " " for chunk in chunks[:-1]] + chunks[-1:]


class InstantProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.config = config

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        tools: list[ToolSpec] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        started = time.perf_counter()
        check_model(self.config, model)
        content, finish_reason = REPLY, "stop"
        if max_tokens is not None and estimate_tokens(content) > max_tokens:
            content, finish_reason = content[: max(0, max_tokens) * 4], "length"
        if on_delta is not None and content:
            for piece in pieces(content):
                on_delta(piece)
        prompt_tokens = estimate_prompt_tokens(messages)
        completion_tokens = estimate_tokens(content)
        return Completion(
            content=content,
            tool_calls=[],
            finish_reason=finish_reason,
            usage=Usage(
                prompt_tokens, completion_tokens, prompt_tokens + completion_tokens, estimated=True
            ),
            latency_ms=elapsed_ms(started),
            model=model,
            provider=self.name,
            # Counted as one request so "attempts - 1" reads as retries, as for HTTP providers.
            attempts=1,
        )
