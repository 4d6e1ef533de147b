"""The API's resources, each method written once for the sync and the async client
(``_methods.py``). Paths are below ``/api/v1``; the API reference is its OpenAPI document.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from . import _program as p
from ._methods import Core, Items, M, Resource, listing, operation
from ._program import Program, Request
from .models import (
    Agent,
    Event,
    File,
    Health,
    Message,
    NewToken,
    Readiness,
    Room,
    RoomAgent,
    Session,
    Token,
    Turn,
    TurnUsage,
    UsageReport,
    User,
)

Upload = str | os.PathLike[str] | bytes | IO[bytes]


def new_idempotency_key() -> str:
    return f"rc-{uuid.uuid4().hex}"


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that were given (None: leave it to the server)."""
    return {name: value for name, value in fields.items() if value is not None}


class _Base(Resource[M]):
    """Request helpers: each builds the program of one request."""

    def _get(self, path: str, model: type[p.M_], **params: Any) -> Program[p.M_]:
        return p.call(Request("GET", path, params=_given(**params)), p.reader(model), self._policy)

    def _post(
        self,
        path: str,
        body: Mapping[str, Any] | None,
        model: type[p.M_],
        *,
        idempotency_key: str | None = None,
        replayable: bool = False,
    ) -> Program[p.M_]:
        # Every POST carries an Idempotency-Key (the API honours it where a repeat could do
        # harm twice: a turn); ``replayable`` says the server makes a repeat of this one
        # harmless, so that it may be sent again after a connection broke mid-request.
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        request = Request("POST", path, json=body, headers=headers, replayable=replayable)
        return p.call(request, p.reader(model), self._policy)

    def _patch(self, path: str, body: Mapping[str, Any], model: type[p.M_]) -> Program[p.M_]:
        return p.call(Request("PATCH", path, json=dict(body)), p.reader(model), self._policy)

    def _delete(self, path: str) -> Program[None]:
        return p.call(Request("DELETE", path), p.nothing, self._policy)

    def _pages(self, path: str, model: type[p.M_], **params: Any) -> Items[p.M_]:
        request = Request("GET", path, params=_given(**params))
        return Items(p.pages(request, model, self._policy))


# -- accounts ---------------------------------------------------------------------------------


class Tokens(_Base[M]):
    @listing
    def list(self, *, limit: int | None = None, order: str | None = None) -> Items[Token]:
        """Your live tokens (their secrets are never shown again)."""
        return self._pages("/auth/tokens", Token, limit=limit, order=order)

    @operation
    def revoke(self, token_id: int) -> Program[None]:
        """Revoke a token: it stops working at once."""
        return self._delete(f"/auth/tokens/{token_id}")


class Auth(_Base[M]):
    def __init__(self, core: Core[M]) -> None:
        super().__init__(core)
        self.tokens = Tokens(core)

    @operation
    def register(self, email: str, password: str) -> Program[User]:
        """Create an account (403 ``registration_disabled`` where the server turned it off)."""
        return self._post("/auth/register", {"email": email, "password": password}, User)

    @operation
    def create_token(self, email: str, password: str, name: str | None = None) -> Program[NewToken]:
        """Log in: a new bearer token (``.token``, shown once). Pass it as ``token=``."""
        body = _given(email=email, password=password, name=name)
        return self._post("/auth/tokens", body, NewToken)

    @operation
    def me(self) -> Program[User]:
        """The user the token belongs to."""
        return self._get("/auth/me", User)


class HealthChecks(_Base[M]):
    @operation
    def live(self) -> Program[Health]:
        """Liveness: the server answers (and its version)."""
        return self._get("/health", Health)

    @operation
    def ready(self) -> Program[Readiness]:
        """Readiness of the database, broker, schema and local model (``.ok``). A server that
        is not ready answers 503 with the same body: returned, not raised, and not retried."""
        request = Request(
            "GET", "/health/ready", retry_statuses=frozenset(), ok=frozenset({200, 503})
        )
        return p.call(request, p.reader(Readiness), self._policy)


# -- agents and rooms -------------------------------------------------------------------------


class Agents(_Base[M]):
    @operation
    def create(
        self,
        /,
        *,
        name: str,
        description: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Program[Agent]:
        """Create an agent; only ``name`` is needed (the rest defaults to the server's default
        provider and model). Unknown ``fields`` are sent as they are."""
        body = _given(
            name=name,
            description=description,
            provider=provider,
            model=model,
            system_prompt=system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            tools=None if tools is None else [*tools],
            metadata=metadata,
            **fields,
        )
        return self._post("/agents", body, Agent)

    @listing
    def list(
        self, *, q: str | None = None, limit: int | None = None, order: str | None = None
    ) -> Items[Agent]:
        """Every agent of yours (``q``: whose name contains it); ``limit`` is the page size."""
        return self._pages("/agents", Agent, q=q, limit=limit, order=order)

    @operation
    def get(self, agent_id: int) -> Program[Agent]:
        return self._get(f"/agents/{agent_id}", Agent)

    @operation
    def update(self, /, agent_id: int, **fields: Any) -> Program[Agent]:
        """Change the given fields (None sets a nullable one back to the default)."""
        return self._patch(f"/agents/{agent_id}", fields, Agent)

    @operation
    def delete(self, agent_id: int) -> Program[None]:
        """Delete an agent; the history that mentions it stays readable."""
        return self._delete(f"/agents/{agent_id}")


class RoomAgents(_Base[M]):
    """A room's agents, in speaking order."""

    @listing
    def list(
        self, room_id: int, *, limit: int | None = None, order: str | None = None
    ) -> Items[RoomAgent]:
        return self._pages(f"/rooms/{room_id}/agents", RoomAgent, limit=limit, order=order)

    @operation
    def add(
        self, /, room_id: int, agent_id: int, *, position: int | None = None, **fields: Any
    ) -> Program[RoomAgent]:
        """Put an agent in the room, last or at ``position`` (0-based)."""
        body = _given(agent_id=agent_id, position=position, **fields)
        return self._post(f"/rooms/{room_id}/agents", body, RoomAgent)

    @operation
    def update(self, /, room_id: int, agent_id: int, **fields: Any) -> Program[RoomAgent]:
        """Move an agent (``position=``)."""
        return self._patch(f"/rooms/{room_id}/agents/{agent_id}", fields, RoomAgent)

    @operation
    def remove(self, room_id: int, agent_id: int) -> Program[None]:
        return self._delete(f"/rooms/{room_id}/agents/{agent_id}")


class Rooms(_Base[M]):
    def __init__(self, core: Core[M]) -> None:
        super().__init__(core)
        self.agents = RoomAgents(core)

    @operation
    def create(
        self,
        /,
        *,
        name: str,
        description: str | None = None,
        instructions: str | None = None,
        orchestration: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Program[Room]:
        """Create a room; ``orchestration`` is e.g. ``{"mode": "round_robin"}``."""
        body = _given(
            name=name,
            description=description,
            instructions=instructions,
            orchestration=orchestration,
            metadata=metadata,
            **fields,
        )
        return self._post("/rooms", body, Room)

    @listing
    def list(
        self, *, q: str | None = None, limit: int | None = None, order: str | None = None
    ) -> Items[Room]:
        return self._pages("/rooms", Room, q=q, limit=limit, order=order)

    @operation
    def get(self, room_id: int) -> Program[Room]:
        return self._get(f"/rooms/{room_id}", Room)

    @operation
    def update(self, /, room_id: int, **fields: Any) -> Program[Room]:
        """Change the given fields; ``orchestration`` is merged into the room's."""
        return self._patch(f"/rooms/{room_id}", fields, Room)

    @operation
    def delete(self, room_id: int) -> Program[None]:
        return self._delete(f"/rooms/{room_id}")


# -- conversations ----------------------------------------------------------------------------


def _scope(agent_id: int | None, room_id: int | None) -> str:
    if (agent_id is None) == (room_id is None):
        raise TypeError("give exactly one of agent_id= (a standalone session) and room_id=")
    return f"/agents/{agent_id}" if room_id is None else f"/rooms/{room_id}"


class Sessions(_Base[M]):
    @operation
    def create(
        self,
        /,
        *,
        agent_id: int | None = None,
        room_id: int | None = None,
        title: str | None = None,
        multitask: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Program[Session]:
        """Start a session with one agent (``agent_id=``) or a room (``room_id=``).

        ``multitask``: what a turn posted while another is active gets: reject (409), enqueue
        or interrupt."""
        body = _given(title=title, multitask=multitask, metadata=metadata, **fields)
        return self._post(f"{_scope(agent_id, room_id)}/sessions", body, Session)

    @listing
    def list(
        self,
        *,
        agent_id: int | None = None,
        room_id: int | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Items[Session]:
        """The sessions of an agent or of a room."""
        path = f"{_scope(agent_id, room_id)}/sessions"
        return self._pages(path, Session, limit=limit, order=order)

    @operation
    def get(self, session_id: int) -> Program[Session]:
        return self._get(f"/sessions/{session_id}", Session)

    @operation
    def update(self, /, session_id: int, **fields: Any) -> Program[Session]:
        """Change ``title``, ``multitask`` or ``metadata``."""
        return self._patch(f"/sessions/{session_id}", fields, Session)

    @operation
    def delete(self, session_id: int) -> Program[None]:
        """Delete a session; its unfinished turns are cancelled."""
        return self._delete(f"/sessions/{session_id}")

    @listing
    def events(
        self, session_id: int, *, tokens: bool = False, last_event_id: str | None = None
    ) -> Items[Event]:
        """The events of the session's turns, one turn after the other, for as long as you
        read (the stream has no end); resumed after ``last_event_id`` and on reconnection."""
        program = p.event_stream(
            f"/sessions/{session_id}/events",
            self._policy,
            tokens=tokens,
            last_event_id=last_event_id,
            until_end=False,
        )
        return Items(_ignoring_result(program))


def _ignoring_result(program: Program[Any]) -> Program[None]:
    yield from program


class Turns(_Base[M]):
    @operation
    def create(
        self,
        /,
        session_id: int,
        content: str,
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        multitask: str | None = None,
        **fields: Any,
    ) -> Program[Turn]:
        """Post a message: the turn is queued for a worker (see ``wait`` and ``stream``).

        The Idempotency-Key (one is made when none is given) makes a repeat of this request,
        by a retry or by you, return the same turn instead of a second one."""
        body = _given(content=content, metadata=metadata, multitask=multitask, **fields)
        path = f"/sessions/{session_id}/turns"
        return self._post(path, body, Turn, idempotency_key=idempotency_key, replayable=True)

    @listing
    def list(
        self, session_id: int, *, limit: int | None = None, order: str | None = None
    ) -> Items[Turn]:
        """A session's turns, newest first (``order="asc"``: oldest first)."""
        return self._pages(f"/sessions/{session_id}/turns", Turn, limit=limit, order=order)

    @operation
    def get(self, turn_id: int) -> Program[Turn]:
        return self._get(f"/turns/{turn_id}", Turn)

    @operation
    def wait(self, turn_id: int, timeout: float | None = None) -> Program[Turn]:
        """The turn once it has ended (long-polls; WaitTimeout after ``timeout`` seconds)."""
        return p.wait_turn(turn_id, timeout, self._policy)

    @listing
    def stream(
        self, turn_id: int, *, tokens: bool = False, last_event_id: str | None = None
    ) -> Items[Event]:
        """The turn's events as they happen, ending with ``end`` (its final state).

        A dropped connection is resumed where it left off (Last-Event-ID); ``last_event_id``
        resumes after an event you had. ``tokens``: also the replies' text as it is written
        (``delta`` events). From a server without event streams: long-polled status,
        message and end events."""
        program = p.turn_events(turn_id, self._policy, tokens=tokens, last_event_id=last_event_id)
        return Items(program)

    @operation
    def cancel(self, turn_id: int) -> Program[Turn]:
        """Cancel a turn (409 ``turn_finished`` once it has completed or failed)."""
        # Cancelling a cancelled turn answers it again: safe to repeat.
        return self._post(f"/turns/{turn_id}/cancel", None, Turn, replayable=True)

    @operation
    def usage(self, turn_id: int) -> Program[TurnUsage]:
        """The turn's LLM calls: totals, per agent, and each call."""
        return self._get(f"/turns/{turn_id}/usage", TurnUsage)


class Messages(_Base[M]):
    @listing
    def list(
        self,
        session_id: int,
        *,
        turn_id: int | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> Items[Message]:
        """A session's history, oldest first (``turn_id``: one turn's messages)."""
        path = f"/sessions/{session_id}/messages"
        return self._pages(path, Message, turn_id=turn_id, limit=limit, order=order)


# -- files and usage --------------------------------------------------------------------------


def _upload_parts(
    source: Upload, filename: str | None, content_type: str | None
) -> tuple[str, bytes, str | None]:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        data = path.read_bytes()
        filename = filename or path.name
    else:
        data = source.read()
        filename = filename or os.path.basename(str(getattr(source, "name", "")))
    if not filename:
        raise TypeError("give filename= with bytes or an unnamed file object")
    return filename, data, content_type


class Files(_Base[M]):
    @operation
    def upload(
        self, source: Upload, filename: str | None = None, content_type: str | None = None
    ) -> Program[File]:
        """Upload a file: a path, bytes (with ``filename``) or a binary file object. Its type
        comes from the name's extension (checked against the content by the server)."""
        name, data, kind = _upload_parts(source, filename, content_type)
        part = (name, data) if kind is None else (name, data, kind)
        headers = {"Idempotency-Key": new_idempotency_key()}
        request = Request("POST", "/files", files={"file": part}, headers=headers)
        return p.call(request, p.reader(File), self._policy)

    @listing
    def list(
        self, *, q: str | None = None, limit: int | None = None, order: str | None = None
    ) -> Items[File]:
        return self._pages("/files", File, q=q, limit=limit, order=order)

    @operation
    def get(self, file_id: int) -> Program[File]:
        return self._get(f"/files/{file_id}", File)

    @operation
    def content(self, file_id: int) -> Program[bytes]:
        """The file's bytes, as uploaded."""
        request = Request("GET", f"/files/{file_id}/content")
        return p.call(request, lambda response: response.content, self._policy)

    @operation
    def delete(self, file_id: int) -> Program[None]:
        return self._delete(f"/files/{file_id}")


def _instant(value: datetime | date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime | date) else value


class Usage(_Base[M]):
    @operation
    def get(
        self,
        /,
        *,
        group_by: str | None = None,
        since: datetime | date | str | None = None,
        until: datetime | date | str | None = None,
        **filters: Any,
    ) -> Program[UsageReport]:
        """Your usage totals; ``group_by`` agent, room, model or day; ``since`` (inclusive) and
        ``until`` (exclusive): datetimes (naive ones are UTC) or dates."""
        return self._get(
            "/usage",
            UsageReport,
            group_by=group_by,
            since=_instant(since),
            until=_instant(until),
            **filters,
        )


__all__ = [
    "Agents",
    "Auth",
    "Files",
    "HealthChecks",
    "Messages",
    "RoomAgents",
    "Rooms",
    "Sessions",
    "Tokens",
    "Turns",
    "Usage",
]
