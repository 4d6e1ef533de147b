"""An HTTP server in front of a live Roomcast that answers scripted replies first, for tests of
what a client does with answers the server rarely gives (a 503, a 429, a route it lacks)::

    with ScriptedProxy(live_server.base_url) as proxy:
        proxy.answer("GET", "/api/v1/agents", 503, headers={"Retry-After": "1"})  # once
        client = Roomcast(proxy.url, token=token)    # the first GET /agents gets the 503,
        ...                                          # every other request reaches the server

A rule matches a method and a path (a regular expression matched in full) and answers
``times`` requests; with ``forward=True`` the request reaches the server first and its answer
is replaced (an answer lost on the way back). ``end_stream`` forwards an event stream's request
and answers only its first events, as a server that closes a stream early. ``seen`` records
every request.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

# Not forwarded: they describe one hop, or what httpx already undid (it decodes the body).
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int
    forward: bool
    events: int | None = None


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    answered_by_rule: bool


@dataclass
class ScriptedProxy:
    target: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.target, timeout=60, trust_env=False)
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def answer(
        self,
        method: str,
        path: str,
        status: int,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        forward: bool = False,
    ) -> ScriptedProxy:
        """Answer the next ``times`` requests matching ``method`` and ``path`` with ``status``
        and the API's error body (``code``)."""
        body = {"status": status, "code": code or f"scripted_{status}", "message": "Scripted."}
        rule = Rule(method, re.compile(path), status, body, headers or {}, times, forward)
        with self._lock:
            self.rules.append(rule)
        return self

    def end_stream(self, path: str, events: int, *, times: int = 1) -> ScriptedProxy:
        """Answer the next ``times`` GETs of the event stream at ``path`` with its first
        ``events`` events only, the connection then closed cleanly."""
        rule = Rule("GET", re.compile(path), 200, {}, {}, times, True, events)
        with self._lock:
            self.rules.append(rule)
        return self

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.fullmatch(path, s.path)]

    def _rule_for(self, request: Request) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                matches = rule.method == request.method and rule.path.fullmatch(request.path)
                if rule.times and matches:
                    rule.times -= 1
                    return rule
        return None

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        rule = self._rule_for(request)
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.args.to_dict(),
                {name.lower(): value for name, value in request.headers},
                rule is not None,
            )
        )
        if rule is None or rule.forward:
            forwarded = self._http.request(
                request.method,
                request.full_path.rstrip("?"),
                headers={k: v for k, v in request.headers if k.lower() not in _HOP_HEADERS},
                content=request.get_data(),
            )
            response = Response(
                forwarded.content,
                forwarded.status_code,
                [(k, v) for k, v in forwarded.headers.items() if k.lower() not in _HOP_HEADERS],
            )
        if rule is not None and rule.events is not None:
            blocks = [b for b in forwarded.content.split(b"\n\n") if b"\ndata:" in b"\n" + b]
            body = b"".join(block + b"\n\n" for block in blocks[: rule.events])
            response = Response(body, 200, mimetype="text/event-stream")
        elif rule is not None:
            response = Response(
                json.dumps(rule.body), rule.status, rule.headers, mimetype="application/json"
            )
        return response(environ, start_response)

    def __enter__(self) -> ScriptedProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


class _QuietHandler(WSGIRequestHandler):
    def log(self, *args: Any) -> None:
        pass
