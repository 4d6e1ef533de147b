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
from roomcast_client import Roomcast, RoomcastError, WaitTimeout


class LegFailed(Exception):
    pass


class Smoke:
    def __init__(self, base_url: str, out=sys.stdout, transport: httpx.BaseTransport | None = None):
        # A couple of quick retries (a 503 during a rollout), not a long wait on a dead host.
        self.rc = Roomcast(
            base_url, token="", timeout=40, max_retries=2, backoff=0.25, transport=transport
        )
        self.out = out
        self.cleanup: list[Callable[[], None]] = []
        self.state: dict[str, Any] = {}

    def leg(self, name: str, func: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            detail = func()
        except (LegFailed, RoomcastError, KeyError, ValueError) as exc:
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
        return "version " + self.rc.health.live().version

    def ready(self) -> str:
        readiness = self.rc.health.ready()
        if not readiness.ok:
            failing = {name: check for name, check in readiness.checks.items() if not check["ok"]}
            raise LegFailed(f"{readiness.status}: {failing}")
        return ", ".join(f"{name} ok" for name, check in readiness.checks.items() if check["ok"])

    def login(self, token: str | None, email: str | None, password: str | None) -> str:
        if token is None:
            if not (email and password):
                raise LegFailed("set SMOKE_TOKEN, or SMOKE_EMAIL and SMOKE_PASSWORD")
            token = self.rc.auth.create_token(email, password, name="smoke").token
        self.rc.token = token
        return self.rc.auth.me().email

    def create_agent(self, provider: str | None, model: str | None) -> str:
        agent = self.rc.agents.create(
            name=f"smoke-{uuid.uuid4().hex[:8]}",
            system_prompt="Answer in one short sentence.",
            provider=provider or None,
            model=model or None,
        )
        self.state["agent"] = agent
        self.cleanup.append(lambda: self.rc.agents.delete(agent.id))
        return f"agent {agent.id} on {agent.provider}/{agent.model}"

    def start_session(self, **scope: int) -> str:
        session = self.rc.sessions.create(**scope, title="smoke")
        self.state["session"] = session
        self.cleanup.insert(0, lambda: self.rc.sessions.delete(session.id))
        return f"session {session.id}"

    def run_turn(self, timeout: float) -> str:
        session = self.state["session"]
        turn = self.rc.turns.create(session.id, "Say hello.")
        try:
            turn = self.rc.turns.wait(turn.id, timeout=timeout)
        except WaitTimeout as exc:
            raise LegFailed(str(exc)) from None
        if turn.status != "completed":
            error = turn.error.raw if turn.error else None
            raise LegFailed(f"turn {turn.id} {turn.status}: {error}")
        self.state["turn"] = turn
        return f"turn {turn.id} completed, {turn.usage.total_tokens} tokens"

    def history(self) -> str:
        turn = self.state["turn"]
        roles = [m.role for m in self.rc.messages.list(turn.session_id, turn_id=turn.id)]
        if roles[:1] != ["user"] or "assistant" not in roles:
            raise LegFailed(f"unexpected history for turn {turn.id}: {roles}")
        return f"{len(roles)} messages"

    def create_room(self) -> str:
        room = self.rc.rooms.create(name=f"smoke-{uuid.uuid4().hex[:8]}")
        self.cleanup.insert(0, lambda: self.rc.rooms.delete(room.id))
        self.rc.rooms.agents.add(room.id, self.state["agent"].id)
        self.state["room"] = room
        return f"room {room.id} with agent {self.state['agent'].id}"

    def clean_up(self) -> str:
        for delete in self.cleanup:
            delete()
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
        ("standalone session", lambda: smoke.start_session(agent_id=smoke.state["agent"].id)),
        ("standalone turn", lambda: smoke.run_turn(timeout)),
        ("history", smoke.history),
        ("create room", smoke.create_room),
        ("room session", lambda: smoke.start_session(room_id=smoke.state["room"].id)),
        ("room turn", lambda: smoke.run_turn(timeout)),
        ("room history", smoke.history),
    ]
    with smoke.rc:
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
