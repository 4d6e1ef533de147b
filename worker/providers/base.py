"""The provider interface: what the orchestration sends to an LLM and what it gets back.

Every provider turns a list of :class:`ChatMessage` (plus optional :class:`ToolSpec` and sampling
parameters) into one :class:`Completion`, or raises :class:`ProviderError` with a stable ``code``
the turn can end with. Providers hold no database state and are safe to share between threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from models.providers import ProviderConfig

Role = Literal["system", "user", "assistant", "tool"]
# Called with each piece of the reply's text as the model writes it, when the caller asks for
# them; None means "the text streamed so far is void": the call is made again (a retry after
# partial output), and what follows starts the reply anew. The Completion stays the authority.
OnDelta = Callable[[str | None], None]

# The codes a failed LLM call ends a turn with; clients may switch on them.
LLM_AUTH_ERROR = "llm_auth_error"
LLM_RATE_LIMITED = "llm_rate_limited"
LLM_UNAVAILABLE = "llm_unavailable"
LLM_BAD_RESPONSE = "llm_bad_response"
LLM_TIMEOUT = "llm_timeout"
LLM_BAD_REQUEST = "llm_bad_request"
LLM_MODEL_UNAVAILABLE = "llm_model_unavailable"
ERROR_CODES = frozenset(
    {
        LLM_AUTH_ERROR,
        LLM_RATE_LIMITED,
        LLM_UNAVAILABLE,
        LLM_BAD_RESPONSE,
        LLM_TIMEOUT,
        LLM_BAD_REQUEST,
        LLM_MODEL_UNAVAILABLE,
    }
)


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


# Slots, not frozen: a context builds hundreds per step, and a frozen dataclass's __init__ cost
# three times as much (0.68 vs 0.22 us here).
@dataclass(slots=True)
class ChatMessage:
    """One message of the conversation sent to the model.

    ``tool_calls`` is set on assistant messages that called tools; ``tool_call_id`` on the
    ``tool`` message carrying a call's result. ``name`` optionally names the speaker (several
    agents share a room transcript).
    """

    role: Role
    content: str | None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; ``parameters`` is its JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # True when the server reported no usage and the counts were estimated from the text
    # (see estimate_tokens); cost and quota figures built on them are approximate.
    estimated: bool = False


@dataclass(frozen=True)
class Completion:
    """The model's answer.

    ``model`` is the model name that was asked for (price tables are keyed by it), ``latency_ms``
    the wall time of the whole ``complete()`` call including retries and their waits, and
    ``attempts`` the number of HTTP requests it took (1 when the first one succeeded).
    """

    content: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    latency_ms: int
    model: str
    provider: str
    attempts: int


class ProviderError(Exception):
    """An LLM call failed; ``code`` is one of ERROR_CODES and ``message`` is safe to show users.

    Messages never contain an API key. ``retryable`` says whether the same call might succeed
    later (the provider has already spent its own retries when it raises); ``attempts`` counts
    the HTTP requests made (0 when none was).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        attempts: int = 0,
        retry_after: float | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown provider error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.attempts = attempts
        # Seconds the server asked us to wait (Retry-After), when it said.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ProviderError({self.code!r}, {self.message!r}, attempts={self.attempts})"


@runtime_checkable
class Provider(Protocol):
    name: str

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        tools: list[ToolSpec] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
    ) -> Completion: ...


def estimate_tokens(text: str) -> int:
    """A rough token count for English-like text: about four characters per token."""
    return math.ceil(len(text) / 4)


# Chat templates wrap every message in a few role/separator tokens.
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(m.content or "") for m in messages)


def check_model(config: ProviderConfig, model: str) -> None:
    """Refuse, before any request, a model the provider's configuration does not list."""
    if not config.accepts_model(model):
        raise ProviderError(
            LLM_MODEL_UNAVAILABLE,
            f"provider {config.name!r} has no model {model!r}"
            f" (it offers: {', '.join(config.models)})",
        )


def elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a time.perf_counter() reading), for latency_ms."""
    return round((time.perf_counter() - started) * 1000)
