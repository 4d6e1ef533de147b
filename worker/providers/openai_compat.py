"""Any OpenAI-compatible chat completions server: OpenAI, vLLM, Ollama, llama.cpp, LiteLLM...

The official ``openai`` client does the HTTP (its own retries are off: ``max_retries=0``); this
module owns the retry policy, so it is the same for every server and visible in one place:

- retried: 429, 408, 5xx, connection errors and timeouts, up to ``config.max_retries`` times,
  waiting a random ("full jitter") exponential backoff, or exactly what the server's
  ``Retry-After`` / ``retry-after-ms`` header asks. A server that asks for more than
  ``RetryPolicy.retry_after_max`` seconds is not retried at all: waiting that long inside a
  turn helps nobody, and a shorter wait would only be refused again.
- not retried: 400/404/422 (``llm_bad_request``, or ``llm_model_unavailable`` when the server
  says the model does not exist), 401/403 (``llm_auth_error``), and a reply that is not a chat
  completion (``llm_bad_response``).

The API key is read from ``os.environ[config.api_key_env]`` on every call (so a rotated key is
picked up without a restart) and never appears in an error message or a log line.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from models.providers import ProviderConfig

from ..retry_after import parse_retry_after
from .base import (
    LLM_AUTH_ERROR,
    LLM_BAD_REQUEST,
    LLM_BAD_RESPONSE,
    LLM_MODEL_UNAVAILABLE,
    LLM_RATE_LIMITED,
    LLM_TIMEOUT,
    LLM_UNAVAILABLE,
    ChatMessage,
    Completion,
    OnDelta,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
    check_model,
    elapsed_ms,
    estimate_prompt_tokens,
    estimate_tokens,
)

log = logging.getLogger(__name__)

# Sent to servers that take no key (a local llama.cpp, Ollama, vLLM without --api-key); the
# client refuses to start without one.
NO_KEY = "no-key"
# Each client has its own connection pool. httpx's pool looks at every connection it holds
# whenever a request starts or ends; with 256 calls in flight on one pool that was a tenth of a
# busy worker's CPU. Calls take the clients in turn, so each pool holds a sixteenth of them.
CLIENT_SHARDS = 16
# How much of a server's error text an error message quotes.
MAX_QUOTED = 300
# OpenAI restricts message names to this; other servers accept it too.
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts, in seconds."""

    # Full-jitter exponential backoff: attempt n waits uniform(0, min(max, initial * 2**n)).
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    # The longest Retry-After we wait for; a longer one ends the call at once.
    retry_after_max: float = 30.0


DEFAULT_RETRY_POLICY = RetryPolicy()


class OpenAICompatProvider:
    """A provider for ``type = "openai"`` servers (and, through LocalLlamaProvider, llama.cpp)."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        trust_env: bool = True,
    ) -> None:
        """``base_url`` and ``api_key`` override the catalog's (the local server has its own);
        ``trust_env=False`` ignores HTTP(S)_PROXY and the like (for a server on loopback)."""
        self.name = config.name
        self.config = config
        self._retry_policy = retry_policy
        self._fixed_api_key = api_key
        self._base_url = base_url or config.base_url
        self._trust_env = trust_env
        self._ssl_context: ssl.SSLContext | None = None
        self._clients: list[openai.OpenAI | None] = [None] * CLIENT_SHARDS
        self._next_client = itertools.count()
        # One retry controller for every call: tenacity keeps each call's state per thread
        # (per greenlet under gevent); building one per call was 3% of a busy worker's CPU.
        self._retrying = Retrying(
            stop=stop_after_attempt(config.max_retries + 1),
            retry=retry_if_exception(self._retryable),
            wait=self._wait,
            sleep=sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )

    @property
    def _client(self) -> openai.OpenAI:
        shard = next(self._next_client) % CLIENT_SHARDS
        client = self._clients[shard]
        if client is None:  # made at first use: each costs milliseconds
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context(trust_env=self._trust_env)
            client = self._clients[shard] = openai.OpenAI(
                base_url=self._base_url,
                api_key=NO_KEY,
                timeout=self.config.timeout,
                max_retries=0,
                http_client=openai.DefaultHttpxClient(
                    trust_env=self._trust_env, verify=self._ssl_context
                ),
            )
            # Providers are configured by the catalog only: the client would otherwise send
            # OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment to every server.
            client.organization = client.project = None
        return client

    @property
    def retry_policy(self) -> RetryPolicy:
        # Looked up per call, so tests can speed up every provider by patching the default.
        return self._retry_policy or DEFAULT_RETRY_POLICY

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
        """One chat completion. With ``on_delta`` the reply is streamed (``stream: true``, the
        usage in the last chunk) and each piece of text is passed on as it arrives; a retry
        after some text was passed on first calls ``on_delta(None)``."""
        check_model(self.config, model)
        api_key = self._api_key()
        body = request_body(
            messages, model=model, tools=tools, temperature=temperature, max_tokens=max_tokens
        )
        if on_delta is not None:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        attempts = 0
        streamed = False  # text was passed on by this call's latest request

        def passed_on(text: str) -> None:
            nonlocal streamed
            streamed = True
            on_delta(text)

        def attempt() -> dict[str, Any]:
            nonlocal attempts, streamed
            attempts += 1
            if on_delta is None:
                return self._send(body, api_key)
            if streamed:
                on_delta(None)
                streamed = False
            return self._send_streaming(body, api_key, passed_on)

        try:
            data = self._retrying(attempt)
            content, tool_calls, finish_reason, usage = parse_response(data, messages, self.name)
        except ProviderError as exc:
            exc.attempts = attempts
            raise
        return Completion(
            content=content,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage,
            latency_ms=elapsed_ms(started),
            model=model,
            provider=self.name,
            attempts=attempts,
        )

    def _api_key(self) -> str:
        if self._fixed_api_key is not None:
            return self._fixed_api_key
        variable = self.config.api_key_env
        if variable is None:
            return NO_KEY
        key = os.environ.get(variable, "").strip()
        if not key:
            raise ProviderError(
                LLM_AUTH_ERROR,
                f"provider {self.name!r} needs an API key in the environment variable"
                f" {variable}, which is not set on the worker",
            )
        return key

    def _send(self, body: dict[str, Any], api_key: str) -> dict[str, Any]:
        """One HTTP request; every failure comes out as a ProviderError.

        The body is already the wire JSON and the reply is parsed here, so the request goes
        through the client's plain ``post`` (its way to any endpoint): ``chat.completions.create``
        would walk every message of the context again to transform it, a tenth of a busy
        worker's CPU."""
        with self._request_errors(body["model"], api_key):
            response = self._client.post(
                "/chat/completions",
                body=body,
                cast_to=httpx.Response,
                options={"headers": _auth(api_key)},
            )
            content = response.content
        try:
            return json.loads(content)
        except ValueError:
            raise ProviderError(
                LLM_BAD_RESPONSE,
                f"provider {self.name!r} answered with something that is not JSON:"
                f" {_quote(content.decode('utf-8', 'replace'), api_key)!r}",
            ) from None

    def _send_streaming(
        self,
        body: dict[str, Any],
        api_key: str,
        on_text: Callable[[str], None],
    ) -> dict[str, Any]:
        """One streamed request, assembled into the JSON of a chat completion (so that it is
        checked like one); every failure comes out as a ProviderError."""
        content: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason, usage, chunks = None, None, 0
        try:
            with (
                self._request_errors(body["model"], api_key),
                self._client.chat.completions.create(
                    **body, extra_headers=_auth(api_key)
                ) as stream,
            ):
                for chunk in stream:
                    chunks += 1
                    if chunk.usage is not None:
                        usage = chunk.usage.model_dump()
                    for choice in chunk.choices or ():
                        if choice.index != 0:
                            continue
                        delta = choice.delta
                        if delta is not None and delta.content:
                            content.append(delta.content)
                            on_text(delta.content)
                        if delta is not None:
                            for piece in delta.tool_calls or ():
                                _add_call_piece(calls, piece)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
        except (httpx.HTTPError, openai.APIError) as exc:  # the stream broke off, or said why
            message = _quote(str(exc) or type(exc).__name__, api_key)
            raise ProviderError(
                LLM_UNAVAILABLE,
                f"provider {self.name!r} broke off its streamed answer: {message}",
                retryable=True,
            ) from None
        except ValueError as exc:  # a chunk that is not JSON, or not a chunk
            raise ProviderError(
                LLM_BAD_RESPONSE,
                f"provider {self.name!r} streamed something that is not a chat completion"
                f" chunk: {_quote(str(exc), api_key)}",
            ) from None
        if not chunks:
            return {}  # parse_response says why this is no chat completion
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
        if calls:
            message["tool_calls"] = [calls[index] for index in sorted(calls)]
            for call in message["tool_calls"]:  # a call without arguments streams none
                call["function"]["arguments"] = call["function"]["arguments"] or "{}"
        data: dict[str, Any] = {"choices": [{"message": message, "finish_reason": finish_reason}]}
        if usage is not None:
            data["usage"] = usage
        return data

    @contextmanager
    def _request_errors(self, model: str, api_key: str) -> Iterator[None]:
        """A request's failures as ProviderErrors: an HTTP status, a timeout, no connection."""
        try:
            yield
        except openai.APIStatusError as exc:
            raise self._status_error(exc, model, api_key) from None
        except (openai.APITimeoutError, httpx.TimeoutException):
            raise ProviderError(
                LLM_TIMEOUT,
                f"provider {self.name!r} did not answer within {self.config.timeout:g} s",
                retryable=True,
            ) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(
                LLM_UNAVAILABLE,
                f"provider {self.name!r} cannot be reached: {_cause(exc)}",
                retryable=True,
            ) from None

    def _status_error(self, exc: openai.APIStatusError, model: str, api_key: str) -> ProviderError:
        status = exc.status_code
        where = f"provider {self.name!r} answered HTTP {status}"
        if status in (401, 403):
            # The server's own text can echo (part of) the key: say only which variable.
            source = f" from {self.config.api_key_env}" if self.config.api_key_env else ""
            return ProviderError(LLM_AUTH_ERROR, f"{where}: the API key{source} was refused")
        said = _quote(_server_message(exc), api_key)
        retryable = status in (408, 429) or status >= 500
        if status == 429:
            code, message = LLM_RATE_LIMITED, f"{where} (rate limited): {said}"
        elif status == 408:
            code, message = LLM_TIMEOUT, f"{where} (request timeout): {said}"
        elif status >= 500:
            code, message = LLM_UNAVAILABLE, f"{where}: {said}"
        elif _is_unknown_model(exc, model):
            code, message = LLM_MODEL_UNAVAILABLE, f"{where}: model {model!r} unknown: {said}"
        elif status == 404:
            code, message = LLM_BAD_REQUEST, f"{where} (not found; is base_url right?): {said}"
        else:
            code, message = LLM_BAD_REQUEST, f"{where}: {said}"
        retry_after = parse_retry_after(exc.response.headers) if retryable else None
        if retry_after is not None and retry_after > self.retry_policy.retry_after_max:
            message += f" (it asked to wait {retry_after:g} s)"
        return ProviderError(code, message, retryable=retryable, retry_after=retry_after)

    def _retryable(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, ProviderError)
            and exc.retryable
            and (exc.retry_after is None or exc.retry_after <= self.retry_policy.retry_after_max)
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        policy = self.retry_policy
        backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
        return backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "LLM call to provider %s failed (attempt %d of %d): %s; retrying in %.2f s",
            self.name,
            state.attempt_number,
            self.config.max_retries + 1,
            getattr(exc, "code", type(exc).__name__),
            state.upcoming_sleep,
        )


def _auth(api_key: str) -> dict[str, str]:
    # Per request: the key is read from the environment on every call.
    return {"Authorization": f"Bearer {api_key}"}


def request_body(
    messages: list[ChatMessage],
    *,
    model: str,
    tools: list[ToolSpec] | None,
    temperature: float | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    """The JSON body of POST /chat/completions."""
    body: dict[str, Any] = {"model": model, "messages": [_wire_message(m) for m in messages]}
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in tools
        ]
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _add_call_piece(calls: dict[int, dict[str, Any]], piece: Any) -> None:
    """Add a streamed tool call piece (a ChoiceDeltaToolCall) to the calls assembled so far:
    the first piece of a call has its id and name, the arguments' JSON text comes in pieces."""
    call = calls.setdefault(
        piece.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if piece.id:
        call["id"] = piece.id
    function = piece.function
    if function is None:
        return
    if function.name and function.name != call["function"]["name"]:
        # Some servers repeat the whole name in every piece; others send it once.
        call["function"]["name"] += function.name
    if function.arguments:
        call["function"]["arguments"] += function.arguments


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    # Never null content: several servers reject an assistant message with tool calls and
    # "content": null, and all of them accept "".
    wire: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.name and message.role != "tool":
        wire["name"] = _NAME_OK.sub("_", message.name)[:64]
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def parse_response(
    data: Any, messages: list[ChatMessage], provider: str
) -> tuple[str, list[ToolCall], str, Usage]:
    """Content, tool calls, finish reason and usage of a chat completion; llm_bad_response if
    the JSON is not one."""

    def bad(why: str) -> ProviderError:
        message = f"provider {provider!r} answered with something that is not a chat completion"
        return ProviderError(LLM_BAD_RESPONSE, f"{message}: {why}")

    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if isinstance(data.get("error"), dict | str):
            raise bad(f"it holds an error: {_quote(_error_text(data), None)}")
        raise bad("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise bad("the first choice has no message")
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise bad("the message content is not text")
    tool_calls = _parse_tool_calls(message.get("tool_calls"), bad)
    finish_reason = choices[0].get("finish_reason")
    if not isinstance(finish_reason, str) or not finish_reason:
        finish_reason = "tool_calls" if tool_calls else "stop"
    return content, tool_calls, finish_reason, _parse_usage(data.get("usage"), messages, content)


def _parse_tool_calls(raw: Any, bad: Callable[[str], ProviderError]) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad("tool_calls is not a list")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad("a tool call has no function name")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            # Some servers (older Ollama) send the arguments as an object, not JSON text.
            arguments = json.dumps(arguments)
        # Some servers omit the id; the tool result must still be matched to its call.
        call_id = item.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        calls.append(ToolCall(id=str(call_id), name=function["name"], arguments=arguments))
    return calls


def _parse_usage(raw: Any, messages: list[ChatMessage], content: str) -> Usage:
    if isinstance(raw, dict):
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if _count(prompt) and _count(completion):
            total = raw.get("total_tokens")
            total = total if _count(total) else prompt + completion
            return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
    # No usage from the server (some proxies and older servers drop it). Zeros would make the
    # call look free; an estimate keeps cost and quota figures close, and says it is one.
    prompt = estimate_prompt_tokens(messages)
    completion = estimate_tokens(content)
    return Usage(prompt, completion, prompt + completion, estimated=True)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_unknown_model(exc: openai.APIStatusError, model: str) -> bool:
    if exc.status_code not in (400, 404, 422):
        return False
    if exc.code == "model_not_found":
        return True
    text = _server_message(exc).lower()
    return "model" in text and any(
        phrase in text for phrase in ("not found", "does not exist", "no such", "unknown")
    )


def _server_message(exc: openai.APIStatusError) -> str:
    return _error_text(exc.body) or exc.response.reason_phrase or f"HTTP {exc.status_code}"


def _error_text(body: Any) -> str:
    """The human part of an error body: {"error": {"message": ...}}, {"error": "..."}, text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or ""
        return str(error) if error else ""
    return str(body) if body else ""


def _quote(text: str, api_key: str | None) -> str:
    text = " ".join(text.split())
    if api_key and api_key != NO_KEY:
        text = text.replace(api_key, "***")
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."


def _cause(exc: openai.APIConnectionError) -> str:
    # The client's message is a bare "Connection error."; the cause says what happened.
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc.message) or type(cause).__name__
