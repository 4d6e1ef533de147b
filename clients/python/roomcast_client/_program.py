"""The client's logic, written once for the sync and the async client.

A *program* is a generator that yields commands (send this request, read the next event of that
stream, sleep, hand this item to the caller) and is sent back their results; a runner
(``_runners.py``) carries the commands out with httpx's sync or async client. So retries,
pagination, long-polls and resumed event streams are one piece of code for both clients, and
the runners only do I/O.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent

from .errors import (
    APIConnectionError,
    UnexpectedResponse,
    WaitTimeout,
    error_from_response,
    retry_after_seconds,
)
from .models import Event, Message, Model, Turn

T = TypeVar("T")
M_ = TypeVar("M_", bound=Model)

# Answers that mean "not done, try again": the API's 503 (a database or broker outage) and 429
# (rate limits) say that nothing was written, and when to come back.
RETRY_STATUSES = frozenset({429, 503})
# Methods whose repeat has the effect of one request (PATCH here only sets the given fields).
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
# The API holds a long-poll at most 30 s; a bit less keeps it under common proxy idle timeouts.
LONG_POLL_SECONDS = 25.0
# The API sends a heartbeat every 15 s (by default): an event stream silent for longer than
# this is dead, and is resumed on a new connection.
STREAM_READ_TIMEOUT = 60.0
# Deltas (tokens=True) are not committed: they carry no event id (the decoder would repeat the
# last one).
UNCOMMITTED_EVENTS = frozenset({"delta", "superseded"})


@dataclass(frozen=True)
class Request:
    """One API request; ``path`` is below ``/api/v1``."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    files: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None
    # Whether the server treats a repeat as the same request (an Idempotency-Key it honours),
    # so that it may be sent again after a connection broke with the answer unknown. None: by
    # the method.
    replayable: bool | None = None
    retry_statuses: frozenset[int] = RETRY_STATUSES
    ok: frozenset[int] = frozenset(range(200, 300))

    @property
    def safe_to_repeat(self) -> bool:
        if self.replayable is not None:
            return self.replayable
        return self.method in REPEATABLE_METHODS


@dataclass(frozen=True)
class Send:
    """Send ``request``; answered with its httpx.Response (read, or with ``stream`` open, its
    body then read by NextEvent). Connection failures are thrown into the program."""

    request: Request
    stream: bool = False


@dataclass(frozen=True)
class NextEvent:
    """The next server-sent event of an open stream; None when the server ended it."""

    response: httpx.Response


@dataclass(frozen=True)
class Close:
    response: httpx.Response


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """An item for the caller of an iterating method (a list's item, a stream's event)."""

    item: Any


Command = Send | NextEvent | Close | Sleep | Emit
Program = Generator[Command, Any, T]


@dataclass(frozen=True)
class Policy:
    """Timeouts and retries: ``max_retries`` more attempts after the first, waiting
    ``backoff * 2**n`` seconds (with jitter, at most ``max_backoff``) or what Retry-After says
    (up to ``max_retry_after``; a longer wait is not waited for: the error is raised)."""

    timeout: float = 30.0
    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0**attempt) * random.uniform(0.5, 1.0)


def _unsent(error: httpx.TransportError) -> bool:
    """Whether the request surely never reached the server (so any request may be retried)."""
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def exchange(request: Request, policy: Policy, *, stream: bool = False) -> Program[httpx.Response]:
    """Send ``request``, again on 429/503 and on connection failures it is safe to repeat;
    the last answer, whatever its status."""
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield Send(request, stream)
        except httpx.TransportError as exc:
            if attempt >= policy.max_retries or not (request.safe_to_repeat or _unsent(exc)):
                raise APIConnectionError(
                    f"{request.method} {request.path}: {type(exc).__name__}: {exc}"
                ) from exc
            delay = policy.delay(attempt)
        else:
            if response.status_code not in request.retry_statuses or attempt >= policy.max_retries:
                return response
            asked = retry_after_seconds(response.headers)
            if asked is not None and asked > policy.max_retry_after:
                return response
            delay = policy.delay(attempt) if asked is None else asked
        attempt += 1
        yield Sleep(delay)


def checked(request: Request, response: httpx.Response) -> httpx.Response:
    if response.status_code not in request.ok:
        raise error_from_response(response)
    return response


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url}: not JSON: {response.text[:200]!r}"
        ) from None


def reader(model: type[M_]) -> Callable[[httpx.Response], M_]:
    return lambda response: model.from_dict(json_of(response))


def nothing(response: httpx.Response) -> None:
    return None


def call(request: Request, read: Callable[[httpx.Response], T], policy: Policy) -> Program[T]:
    """One request (with its retries); its answer read by ``read``, or its error raised."""
    response = yield from exchange(request, policy)
    return read(checked(request, response))


def page(request: Request, cursor: str | None, policy: Policy) -> Program[tuple[list[Any], str]]:
    """One page of a list: its items (JSON) and the cursor of the next page ("" at the end)."""
    params = dict(request.params or {})
    if cursor:
        params["cursor"] = cursor
    body = yield from call(replace(request, params=params), json_of, policy)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise UnexpectedResponse(f"GET {request.path}: not a page: {str(body)[:200]}")
    next_cursor = body.get("next_cursor") if body.get("has_more") else None
    return body["data"], next_cursor or ""


def pages(request: Request, model: type[Model], policy: Policy) -> Program[None]:
    """Every item of a list, page after page (each page read when the caller gets to it)."""
    cursor: str | None = None
    while cursor != "":
        items, cursor = yield from page(request, cursor, policy)
        for item in items:
            yield Emit(model.from_dict(item))


def collect(request: Request, model: type[M_], policy: Policy) -> Program[list[M_]]:
    """Every item of a list, read before it is returned."""
    found: list[M_] = []
    cursor: str | None = None
    while cursor != "":
        items, cursor = yield from page(request, cursor, policy)
        found.extend(model.from_dict(item) for item in items)
    return found


# -- turns: waiting and streaming -------------------------------------------------------------


def wait_turn(turn_id: int, timeout: float | None, policy: Policy) -> Program[Turn]:
    """Long-poll the turn until it ends (``?wait=&until=terminal``: one request per 25 s)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = LONG_POLL_SECONDS
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        request = Request(
            "GET",
            f"/turns/{turn_id}",
            params={"wait": round(wait, 3), "until": "terminal"},
            read_timeout=policy.timeout + wait,
        )
        turn = yield from call(request, reader(Turn), policy)
        if turn.is_terminal:
            return turn
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(turn, timeout or 0.0)


def _event(sse: ServerSentEvent) -> Event | None:
    """The client's Event of a server-sent one (None for a bare ``retry:`` or empty event)."""
    if not sse.data:
        return None
    try:
        data = json.loads(sse.data)
    except ValueError:
        raise UnexpectedResponse(f"event {sse.event!r} is not JSON: {sse.data[:200]!r}") from None
    event_id = None if sse.event in UNCOMMITTED_EVENTS else (sse.id or None)
    return Event(sse.event, data if isinstance(data, dict) else {"value": data}, event_id)


def event_stream(
    path: str,
    policy: Policy,
    *,
    tokens: bool,
    last_event_id: str | None,
    until_end: bool,
) -> Program[bool]:
    """The events of an SSE endpoint, resumed with Last-Event-ID on a new connection whenever
    one ends or breaks (a turn's stream until its ``end``; a session's for as long as the caller
    reads). False when the first connection is answered 404 (the caller tells a missing resource
    from a server without streams); a later 404 is raised."""
    failures = 0
    connected = False
    while True:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = Request(
            "GET",
            path,
            params={"tokens": "true"} if tokens else None,
            headers=headers,
            read_timeout=max(policy.timeout, STREAM_READ_TIMEOUT),
        )
        response = yield from exchange(request, policy, stream=True)
        if response.status_code == 204:
            return True  # a resumed turn stream that had already sent the end
        if response.status_code == 404 and not connected:
            return False
        checked(request, response)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            yield Close(response)
            raise UnexpectedResponse(f"GET {path}: not an event stream ({content_type})")
        connected = True
        opened, received = time.monotonic(), 0
        try:
            while (sse := (yield NextEvent(response))) is not None:
                event = _event(sse)
                if event is None:
                    continue
                received += 1
                failures = 0
                if event.id:
                    last_event_id = event.id
                yield Emit(event)
                if until_end and event.event == "end":
                    yield Close(response)
                    return True
        except httpx.TransportError as exc:
            failures += 1
            if failures > policy.max_retries:
                raise APIConnectionError(f"GET {path}: the stream broke: {exc}") from exc
            yield Close(response)
            yield Sleep(policy.delay(failures - 1))
            continue
        yield Close(response)
        # The server closes a stream after a while (ROOMCAST_SSE_MAX_SECONDS): resume at once,
        # unless it closed at once with nothing said (then as an EventSource would: in a while).
        if not received and time.monotonic() - opened < 1.0:
            yield Sleep(policy.backoff * 4)


def polled_events(turn: Turn, etag: str | None, policy: Policy) -> Program[None]:
    """A turn's events for a server without event streams: its status changes, its messages and
    its ``end``, from long-polls of the turn (with If-None-Match: woken by any change)."""
    seen: tuple[str, int] | None = None
    last_message = 0
    while True:
        if (turn.status, turn.attempt) != seen:
            seen = (turn.status, turn.attempt)
            yield Emit(Event("status", {"turn_id": turn.id, **_status_data(turn)}))
        if max([turn.input_message_id or 0, *turn.message_ids]) > last_message:
            request = Request(
                "GET",
                f"/sessions/{turn.session_id}/messages",
                params={"turn_id": turn.id, "order": "asc", "limit": 100},
            )
            for message in (yield from collect(request, Message, policy)):
                if message.id > last_message:
                    last_message = message.id
                    yield Emit(Event(message_event_name(message), message.raw))
        if turn.is_terminal:
            yield Emit(Event("end", turn.raw))
            return
        request = Request(
            "GET",
            f"/turns/{turn.id}",
            params={"wait": LONG_POLL_SECONDS},
            headers={"If-None-Match": etag} if etag else {},
            read_timeout=policy.timeout + LONG_POLL_SECONDS,
            ok=frozenset({200, 304}),
        )
        response = yield from call(request, _itself, policy)
        if response.status_code == 200:
            turn, etag = Turn.from_dict(json_of(response)), response.headers.get("etag")


def _itself(response: httpx.Response) -> httpx.Response:
    return response


def _status_data(turn: Turn) -> dict[str, Any]:
    data: dict[str, Any] = {"status": turn.status, "attempt": turn.attempt}
    if turn.is_terminal:
        data["stop_reason"] = turn.stop_reason
        data["error"] = turn.error.raw if turn.error else None
    return data


def message_event_name(message: Message) -> str:
    """The event a message is sent as on the API's streams."""
    if message.role == "tool":
        return "tool_result"
    if message.role == "assistant" and message.tool_calls:
        return "tool_call"
    return "message"


def turn_events(
    turn_id: int, policy: Policy, *, tokens: bool, last_event_id: str | None
) -> Program[None]:
    """A turn's events until its ``end``; long-polled from a server without event streams (its
    events route answers 404 for a turn that exists)."""
    streamed = yield from event_stream(
        f"/turns/{turn_id}/events",
        policy,
        tokens=tokens,
        last_event_id=last_event_id,
        until_end=True,
    )
    if streamed:
        return
    # NotFound here: no such turn.
    response = yield from call(Request("GET", f"/turns/{turn_id}"), _itself, policy)
    turn = Turn.from_dict(json_of(response))
    yield from polled_events(turn, response.headers.get("etag"), policy)
