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
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
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

    def render(self, request: RecordedRequest) -> tuple[bytes, dict[str, str]]:
        body = self.body
        if isinstance(body, dict) and body.get("object") == "chat.completion":
            body = {**body, "model": (request.json or {}).get("model", "fake")}
            if body.get("usage") == AUTO:
                body["usage"] = _auto_usage(request, body)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return payload, {"Content-Type": self.content_type, **self.headers}


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
) -> Scripted:
    """A chat completion. ``usage``: AUTO (counted from the request), None (omitted), or a
    (prompt_tokens, completion_tokens) pair."""
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
    return Scripted(body=body, delay=delay)


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
        with self._lock:
            self.requests.append(recorded)
            scripted = self._queue.popleft() if self._queue else None
            responder, release = self._responder, self._release
        if request.path != CHAT_PATH or request.method != "POST":
            scripted = error_reply(404, f"fake_llm serves only POST {CHAT_PATH}")
        elif scripted is None and responder is not None:
            answer = responder(recorded)
            scripted = text_reply(answer) if isinstance(answer, str) else answer
        elif scripted is None:
            scripted = error_reply(418, "fake_llm: nothing scripted for this request")
        if scripted.delay:
            release.wait(scripted.delay)
        payload, headers = scripted.render(recorded)
        return Response(payload, status=scripted.status, headers=headers)(environ, start_response)
