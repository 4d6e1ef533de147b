"""A scripted OpenAI-compatible server on 127.0.0.1, for tests that need a real HTTP LLM.

Each test scripts the replies, in order; every request takes the next one::

    def test_something(fake_llm):                      # fixture in tests/conftest.py
        fake_llm.status(429, retry_after=0).reply("hello")
        provider = get_provider(fake_llm.provider_config())
        ...
        assert fake_llm.requests[-1].messages[-1]["content"] == "hi"

Scripts: ``reply(text)``, ``tool_call(name, args)``, ``status(500)``, ``status(429,
retry_after=1)``, ``raw(b"not json")``, any of them with ``delay=`` seconds (slower than the
provider's timeout for a timeout). When the queue is empty, ``respond_with(fn)`` decides:
``fn(request)`` returns a reply (a str, or one of the ``*_reply`` builders), e.g. by looking at
the system prompt to answer as a given agent. With neither, the server answers 418 so a missing
script fails loudly. ``requests`` records everything received (headers, JSON body).

Like a strict chat template (llama.cpp's, or one requiring user/assistant alternation), the
server answers 400 to a request whose messages break the rules :func:`template_violation`
checks, before taking anything from the script. A test that sends an invalid context on
purpose calls ``fake_llm.accept_invalid_contexts()`` (until the next reset).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from models.providers import ProviderConfig

CHAT_PATH = "/v1/chat/completions"
AUTO = "auto"
_ids = itertools.count(1)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return (self.json or {}).get("messages", [])

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return (self.json or {}).get("tools")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def system_prompt(self) -> str:
        return "\n".join(m.get("content") or "" for m in self.messages if m["role"] == "system")


@dataclass
class Scripted:
    """One canned answer: status, headers and a JSON body (or raw bytes), after ``delay`` s."""

    status: int = 200
    body: Any = None  # a dict, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"
    cut_after: int | None = None  # streamed: drop the connection after this many text pieces

    def render(self, request: RecordedRequest) -> tuple[bytes, dict[str, str]]:
        body = self.body
        if isinstance(body, dict) and body.get("object") == "chat.completion":
            body = {**body, "model": (request.json or {}).get("model", "fake")}
            if body.get("usage") == AUTO:
                body["usage"] = _auto_usage(request, body)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return payload, {"Content-Type": self.content_type, **self.headers}

    def streams(self, request: RecordedRequest) -> bool:
        """Whether the answer is streamed: a completion to a request with ``stream: true``."""
        return (
            self.status == 200
            and isinstance(self.body, dict)
            and self.body.get("object") == "chat.completion"
            and bool((request.json or {}).get("stream"))
        )

    def render_stream(self, request: RecordedRequest) -> Iterator[bytes]:
        """The completion as OpenAI streams it: server-sent ``chat.completion.chunk`` events
        (the role, the text in a few pieces, each tool call's name then its arguments in two
        pieces, the finish reason), the usage in a last chunk without choices when the request
        asked for it (``stream_options.include_usage``), then ``[DONE]``. With ``cut_after``,
        the connection is dropped after that many pieces of text."""
        payload, _ = self.render(request)
        body = json.loads(payload)
        choice = body["choices"][0]
        message = choice["message"]
        base = {k: body[k] for k in ("id", "created", "model")}

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            data = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for sent, piece in enumerate(_pieces(message.get("content") or "")):
            if self.cut_after is not None and sent >= self.cut_after:
                raise ConnectionAbortedError("fake_llm: stream cut off")
            yield chunk({"content": piece})
        for index, call in enumerate(message.get("tool_calls") or ()):
            name = {"name": call["function"]["name"], "arguments": ""}
            yield chunk(
                {
                    "tool_calls": [
                        {"index": index, "id": call["id"], "type": "function", "function": name}
                    ]
                }
            )
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, choice["finish_reason"])
        stream_options = (request.json or {}).get("stream_options") or {}
        if stream_options.get("include_usage") and "usage" in body:
            yield chunk(None, usage=body["usage"])
        yield b"data: [DONE]\n\n"


def _pieces(text: str, count: int = 4) -> list[str]:
    """``text`` cut at word boundaries into at most ``count`` pieces that join back to it."""
    words = text.split(" ")
    size = max(1, -(-len(words) // count))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [part + " " for part in parts[:-1]] + [p for p in parts[-1:] if p]


# What strict templates answer; llama.cpp's and OpenAI's wording where they have one.
TWO_ASSISTANTS_AT_END = "Cannot have 2 or more assistant messages at the end of the list."
ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
ENDS_WITH_ASSISTANT = (
    "The last message is an assistant message: it would be continued as a prefill, not answered."
)
SYSTEM_FIRST = "System message must be at the beginning."
NO_USER_QUERY = "No user query found in messages."
MISSING_RESULTS = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to"
    " each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}"
)
LONE_RESULT = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message"
    " with 'tool_calls'."
)
DUPLICATE_CALL_ID = "Duplicate tool_call_id in an assistant message's 'tool_calls': {id}"
UNKNOWN_ROLE = "Unknown message role: {role!r}"


def template_violation(messages: Any) -> str | None:
    """Why a strict chat template would refuse ``messages`` (the request's JSON list), or None.

    Rules: at most one system message, and only first; then a user message; user and assistant
    alternate; an assistant message with tool_calls is followed at once by one tool message per
    call (matching ids), and tool messages appear nowhere else; the list ends with a user or a
    tool message.
    """
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array."
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles[-2:] == ["assistant", "assistant"]:
        return TWO_ASSISTANTS_AT_END
    for role in roles:
        if role not in ("system", "user", "assistant", "tool"):
            return UNKNOWN_ROLE.format(role=role)
    if "system" in roles[1:]:
        return SYSTEM_FIRST
    rest = messages[1:] if roles[0] == "system" else messages
    if not rest:
        return NO_USER_QUERY
    previous = "system"
    awaited: set[str] = set()  # ids of tool calls still to be answered
    for message in rest:
        role = message["role"]
        if awaited and role != "tool":
            return MISSING_RESULTS.format(ids=", ".join(sorted(awaited)))
        if role == "tool":
            if message.get("tool_call_id") not in awaited:
                return LONE_RESULT
            awaited.discard(message["tool_call_id"])
        elif role == "user":
            if previous == "user":
                return ALTERNATE
        elif previous in ("system", "assistant"):
            return ALTERNATE  # an assistant first, or after an assistant
        else:
            ids = [call.get("id") for call in message.get("tool_calls") or ()]
            if len(set(ids)) < len(ids):
                return DUPLICATE_CALL_ID.format(id=next(i for i in ids if ids.count(i) > 1))
            awaited = set(ids)
        previous = role
    if awaited:
        return MISSING_RESULTS.format(ids=", ".join(sorted(awaited)))
    if previous == "assistant":
        return ENDS_WITH_ASSISTANT
    return None


def _words(text: str | None) -> int:
    return len((text or "").split())


def _auto_usage(request: RecordedRequest, body: dict[str, Any]) -> dict[str, int]:
    # Deterministic, plausible counts: a word is a token, plus a few per message.
    prompt = sum(3 + _words(m.get("content")) for m in request.messages)
    message = body["choices"][0]["message"]
    completion = max(1, _words(message.get("content")) + 10 * len(message.get("tool_calls") or []))
    return _usage(prompt, completion)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def text_reply(
    text: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: Any = AUTO,
    delay: float = 0.0,
    cut_after: int | None = None,
) -> Scripted:
    """A chat completion. ``usage``: AUTO (counted from the request), None (omitted), or a
    (prompt_tokens, completion_tokens) pair. ``cut_after``: streamed, the connection drops
    after that many pieces of the text."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
    }
    if isinstance(usage, tuple):
        usage = _usage(*usage)
    if usage is not None:
        body["usage"] = usage
    return Scripted(body=body, delay=delay, cut_after=cut_after)


def tool_call_reply(
    name: str,
    arguments: dict[str, Any] | str | None = None,
    *,
    call_id: str | None = None,
    content: str | None = None,
    delay: float = 0.0,
) -> Scripted:
    """A completion asking for one tool call (content null, as OpenAI sends it)."""
    call = {
        "id": call_id or f"call_fake_{next(_ids)}",
        "type": "function",
        "function": {
            "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
        },
    }
    return text_reply(content, tool_calls=[call], delay=delay)


def error_reply(
    status: int,
    message: str | None = None,
    *,
    retry_after: float | str | None = None,
    code: str | None = None,
    delay: float = 0.0,
) -> Scripted:
    """An OpenAI-style error body with ``status``; ``retry_after`` sets the Retry-After header."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    error = {"message": message or f"fake error {status}", "type": "fake_error", "code": code}
    return Scripted(status=status, body={"error": error}, headers=headers, delay=delay)


def raw_reply(
    body: bytes | str, *, status: int = 200, content_type: str = "application/json"
) -> Scripted:
    """Exactly these bytes (malformed JSON, an HTML error page...)."""
    payload = body.encode() if isinstance(body, str) else body
    return Scripted(status=status, body=payload, content_type=content_type)


Responder = Callable[[RecordedRequest], "Scripted | str"]


class _QuietHandler(WSGIRequestHandler):
    def log(self, *args: Any) -> None:  # keep test output (and caplog) to what the test does
        pass


class FakeLLM:
    """The server. Chainable scripting methods; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Scripted] = deque()
        self._responder: Responder | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.strict = True  # refuse invalid contexts (template_violation)
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-llm", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget the script, the responder and the recorded requests; end pending delays."""
        with self._lock:
            self._release.set()  # wake replies still sleeping for an earlier test
            self._release = threading.Event()
            self._queue.clear()
            self._responder = None
            self.requests = []
            self.strict = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def provider_config(self, name: str = "fake", **overrides: Any) -> ProviderConfig:
        """A catalog entry (type openai) pointing here; small timeout, two retries."""
        values: dict[str, Any] = {
            "name": name,
            "type": "openai",
            "base_url": self.base_url,
            "default_model": "fake-model",
            "timeout": 5.0,
            "max_retries": 2,
        }
        return ProviderConfig(**(values | overrides))

    # -- scripting ---------------------------------------------------------------------------

    def then(self, *scripted: Scripted) -> FakeLLM:
        with self._lock:
            self._queue.extend(scripted)
        return self

    def reply(self, text: str = "Hello from the fake LLM.", **kwargs: Any) -> FakeLLM:
        return self.then(text_reply(text, **kwargs))

    def tool_call(
        self, name: str, arguments: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> FakeLLM:
        return self.then(tool_call_reply(name, arguments, **kwargs))

    def status(self, status: int, message: str | None = None, **kwargs: Any) -> FakeLLM:
        return self.then(error_reply(status, message, **kwargs))

    def raw(self, body: bytes | str, **kwargs: Any) -> FakeLLM:
        return self.then(raw_reply(body, **kwargs))

    def respond_with(self, responder: Responder) -> FakeLLM:
        """Answer with ``responder(request)`` whenever the queue is empty."""
        self._responder = responder
        return self

    def accept_invalid_contexts(self) -> FakeLLM:
        """Answer requests whose messages break the template rules too (until the next reset):
        only for tests of the HTTP layer that send such a context on purpose."""
        self.strict = False
        return self

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    @property
    def pending(self) -> int:
        """Scripted replies not yet taken."""
        return len(self._queue)

    # -- serving -----------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=request.get_data(),
        )
        chat = request.path == CHAT_PATH and request.method == "POST"
        violation = None
        with self._lock:
            self.requests.append(recorded)
            if chat and self.strict and isinstance(recorded.json, dict):
                violation = template_violation(recorded.json.get("messages"))
            # A refused request is answered before the model would be: it takes no script.
            scripted = self._queue.popleft() if self._queue and not violation else None
            responder, release = self._responder, self._release
        if not chat:
            scripted = error_reply(404, f"fake_llm serves only POST {CHAT_PATH}")
        elif violation:
            scripted = error_reply(400, violation, code="invalid_request_error")
        elif scripted is None and responder is not None:
            answer = responder(recorded)
            scripted = text_reply(answer) if isinstance(answer, str) else answer
        elif scripted is None:
            scripted = error_reply(418, "fake_llm: nothing scripted for this request")
        if scripted.delay:
            release.wait(scripted.delay)
        if scripted.streams(recorded):
            stream = scripted.render_stream(recorded)
            response = Response(stream, status=200, mimetype="text/event-stream")
            return response(environ, start_response)
        payload, headers = scripted.render(recorded)
        return Response(payload, status=scripted.status, headers=headers)(environ, start_response)
