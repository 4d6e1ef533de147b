"""A webhook receiver on 127.0.0.1 for the tests: a threaded http.server that records every
request and answers from a script, and a Standard Webhooks verifier written from the spec.

    receiver.then(Reply(503), Reply(503))   # the next two requests; then 200 (the default)
    receiver.then(Reply(hang=True))         # never answers (until reset or stop)
    receiver.then(Reply(200, endless_body=True))
    received = receiver.wait_for(3)

The verifier is independent of the server's signing (the ``standardwebhooks`` library): it
follows https://www.standardwebhooks.com/ itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How long a hanging answer waits before it gives up by itself.
HANG_SECONDS = 20
TIMESTAMP_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # accept the request and never answer
    endless_body: bool = False  # answer, then send body bytes until the client goes away


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                reply = receiver._record(Received(self.path, headers, body, time.monotonic()))
                if reply.hang:
                    receiver._release.wait(HANG_SECONDS)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if not reply.endless_body:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.end_headers()
                try:
                    while not receiver._release.is_set():
                        self.wfile.write(b"x" * 65536)
                except OSError:
                    pass  # the client stopped reading and closed the connection

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def then(self, *replies: Reply) -> WebhookReceiver:
        with self._changed:
            self._script.extend(replies)
        return self

    def reset(self) -> None:
        """Release hanging answers, forget what was received and scripted."""
        self._release.set()
        with self._changed:
            self._script.clear()
            self.received.clear()
        self._release = threading.Event()

    def _record(self, received: Received) -> Reply:
        with self._changed:
            self.received.append(received)
            self._changed.notify_all()
            return self._script.popleft() if self._script else Reply()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The first ``count`` requests received, waiting for them up to ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} of {count} webhooks arrived")
            return list(self.received[:count])


def verify(secret: str, received: Received) -> dict[str, Any]:
    """The body of a delivery whose signature ``secret`` verifies (Standard Webhooks v1:
    base64 HMAC-SHA256 of "id.timestamp.body" under the base64-decoded secret after whsec_);
    AssertionError otherwise."""
    headers = received.headers
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= TIMESTAMP_TOLERANCE_SECONDS, timestamp
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = headers["webhook-signature"].split(" ")
    assert any(hmac.compare_digest(expected, s) for s in signatures), "signature mismatch"
    return json.loads(received.body)
