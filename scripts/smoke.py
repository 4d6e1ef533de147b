"""Deployment smoke test: prove a running Roomcast serves the current API, end to end.

    SMOKE_BASE_URL=https://roomcast.example.com SMOKE_TOKEN=rc_... make smoke
    SMOKE_BASE_URL=http://127.0.0.1:8000 SMOKE_EMAIL=ops@example.com SMOKE_PASSWORD=... make smoke

Runs each leg in order, prints one line per leg, and exits non-zero at the first failure. It
creates an agent, a room and sessions of its own and deletes them at the end (also on failure).
SMOKE_PROVIDER / SMOKE_MODEL choose the agents' model (default: the server's default).
SMOKE_TURN_TIMEOUT bounds the wait for each turn (seconds, default 120).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled"}


class LegFailed(Exception):
    pass


class Smoke:
    def __init__(self, base_url: str, out=sys.stdout, transport: httpx.BaseTransport | None = None):
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1", timeout=40, transport=transport
        )
        self.out = out
        self.cleanup: list[str] = []
        self.state: dict[str, Any] = {}

    def call(self, method: str, path: str, expect: int, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            raise LegFailed(
                f"{method} {path}: expected {expect}, got {response.status_code}: "
                f"{' '.join(response.text.split())[:300]}"
            )
        return response.json() if response.content else None

    def leg(self, name: str, func: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            detail = func()
        except (LegFailed, httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"FAIL {name}: {exc}", file=self.out, flush=True)
            raise
        elapsed = (time.monotonic() - started) * 1000
        print(
            f"ok   {name} ({elapsed:.0f} ms){': ' + detail if detail else ''}",
            file=self.out,
            flush=True,
        )

    # -- legs --------------------------------------------------------------------------------

    def health(self) -> str:
        return "version " + self.call("GET", "/health", 200)["version"]

    def ready(self) -> str:
        body = self.call("GET", "/health/ready", 200)
        return ", ".join(f"{name} ok" for name, check in body["checks"].items() if check["ok"])

    def login(self, token: str | None, email: str | None, password: str | None) -> str:
        if token is None:
            if not (email and password):
                raise LegFailed("set SMOKE_TOKEN, or SMOKE_EMAIL and SMOKE_PASSWORD")
            token = self.call(
                "POST",
                "/auth/tokens",
                201,
                json={"email": email, "password": password, "name": "smoke"},
            )["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        return self.call("GET", "/auth/me", 200)["email"]

    def create_agent(self, provider: str | None, model: str | None) -> str:
        body: dict[str, Any] = {
            "name": f"smoke-{uuid.uuid4().hex[:8]}",
            "system_prompt": "Answer in one short sentence.",
        }
        if provider:
            body["provider"] = provider
        if model:
            body["model"] = model
        agent = self.call("POST", "/agents", 201, json=body)
        self.state["agent"] = agent
        self.cleanup.append(f"/agents/{agent['id']}")
        return f"agent {agent['id']} on {agent['provider']}/{agent['model']}"

    def start_session(self, scope: str) -> str:
        session = self.call("POST", f"{scope}/sessions", 201, json={"title": "smoke"})
        self.state["session"] = session
        self.cleanup.insert(0, f"/sessions/{session['id']}")
        return f"session {session['id']}"

    def run_turn(self, timeout: float) -> str:
        session = self.state["session"]
        turn = self.call(
            "POST", f"/sessions/{session['id']}/turns", 202, json={"content": "Say hello."}
        )
        deadline = time.monotonic() + timeout
        while turn["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise LegFailed(f"turn {turn['id']} still {turn['status']} after {timeout:.0f} s")
            turn = self.call("GET", f"/turns/{turn['id']}", 200, params={"wait": 10})
        if turn["status"] != "completed":
            raise LegFailed(f"turn {turn['id']} {turn['status']}: {turn['error']}")
        self.state["turn"] = turn
        return f"turn {turn['id']} completed, {turn['usage']['total_tokens']} tokens"

    def history(self) -> str:
        turn = self.state["turn"]
        page = self.call(
            "GET", f"/sessions/{turn['session_id']}/messages", 200, params={"turn_id": turn["id"]}
        )
        roles = [m["role"] for m in page["data"]]
        if roles[:1] != ["user"] or "assistant" not in roles:
            raise LegFailed(f"unexpected history for turn {turn['id']}: {roles}")
        return f"{len(roles)} messages"

    def create_room(self) -> str:
        room = self.call("POST", "/rooms", 201, json={"name": f"smoke-{uuid.uuid4().hex[:8]}"})
        self.cleanup.insert(0, f"/rooms/{room['id']}")
        self.call(
            "POST", f"/rooms/{room['id']}/agents", 201, json={"agent_id": self.state["agent"]["id"]}
        )
        self.state["room"] = room
        return f"room {room['id']} with agent {self.state['agent']['id']}"

    def clean_up(self) -> str:
        for path in self.cleanup:
            self.call("DELETE", path, 204)
        return f"deleted {len(self.cleanup)} resources"


def run(env: dict[str, str], out=sys.stdout, transport: httpx.BaseTransport | None = None) -> int:
    base_url = env.get("SMOKE_BASE_URL")
    if not base_url:
        print("SMOKE_BASE_URL is required (e.g. http://127.0.0.1:8000)", file=out)
        return 2
    smoke = Smoke(base_url, out, transport)
    timeout = float(env.get("SMOKE_TURN_TIMEOUT", "120"))
    legs: list[tuple[str, Callable[[], str]]] = [
        ("health", smoke.health),
        ("readiness", smoke.ready),
        (
            "auth/me",
            lambda: smoke.login(
                env.get("SMOKE_TOKEN"), env.get("SMOKE_EMAIL"), env.get("SMOKE_PASSWORD")
            ),
        ),
        (
            "create agent",
            lambda: smoke.create_agent(env.get("SMOKE_PROVIDER"), env.get("SMOKE_MODEL")),
        ),
        (
            "standalone session",
            lambda: smoke.start_session(f"/agents/{smoke.state['agent']['id']}"),
        ),
        ("standalone turn", lambda: smoke.run_turn(timeout)),
        ("history", smoke.history),
        ("create room", smoke.create_room),
        ("room session", lambda: smoke.start_session(f"/rooms/{smoke.state['room']['id']}")),
        ("room turn", lambda: smoke.run_turn(timeout)),
        ("room history", smoke.history),
    ]
    try:
        for name, func in legs:
            smoke.leg(name, func)
    except Exception:
        if smoke.cleanup:
            with contextlib.suppress(Exception):
                smoke.leg("cleanup", smoke.clean_up)
        return 1
    smoke.leg("cleanup", smoke.clean_up)
    return 0


if __name__ == "__main__":
    sys.exit(run(dict(os.environ)))
