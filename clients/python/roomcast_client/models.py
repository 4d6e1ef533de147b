"""The API's resources as typed objects, written from its OpenAPI document
(``/api/v1/docs/openapi.json``).

Each is read from the JSON the API answers with: timestamps become ``datetime``, costs
``Decimal``, nested objects their own class. A field the client does not know (a newer server's)
is kept in ``extra``, and the whole object as received in ``raw``, so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Self

from .errors import UnexpectedResponse

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
    """The base of every resource: ``extra`` holds the fields this client does not know."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise UnexpectedResponse(f"expected a JSON object for {cls.__name__}, got {data!r}")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        readers = _READERS.get(cls) or _READERS.setdefault(cls, _readers(cls))
        for key, value in data.items():
            if key in readers:
                known[key] = readers[key](value)
            else:
                extra[key] = value
        try:
            return cls(**known, extra=extra, raw=dict(data))
        except TypeError as exc:  # a required field is missing
            raise UnexpectedResponse(f"{cls.__name__}: {exc}") from None


Reader = Callable[[Any], Any]
_READERS: dict[type[Model], dict[str, Reader]] = {}


def _readers(cls: type[Model]) -> dict[str, Reader]:
    hints = typing.get_type_hints(cls)
    return {
        field.name: _reader(hints[field.name])
        for field in dataclasses.fields(cls)
        if field.name not in ("extra", "raw")
    }


def _reader(hint: Any) -> Reader:
    """How to read a JSON value into the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = _reader(next(a for a in args if a is not type(None)))
        return lambda value: None if value is None else inner(value)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], Model):
        item = _reader(args[0])
        return lambda value: [item(v) for v in value] if isinstance(value, list) else value
    if isinstance(hint, type):
        if issubclass(hint, Model):
            return hint.from_dict
        if hint is datetime:
            return _parsed(datetime.fromisoformat)
        if hint is date:
            return _parsed(date.fromisoformat)
        if hint is Decimal:
            return lambda value: Decimal(str(value))
    return lambda value: value


def _parsed(parse: Callable[[str], Any]) -> Reader:
    return lambda value: parse(value) if isinstance(value, str) else value


# -- accounts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class User(Model):
    id: int
    email: str
    created_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Token(Model):
    """An API token; the secret itself is shown only once, on creation (``NewToken``)."""

    id: int
    name: str = ""
    token_hint: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewToken(Token):
    token: str
    """The bearer secret: store it now, the API never shows it again."""


# -- agents and rooms -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Agent(Model):
    id: int
    name: str
    description: str = ""
    provider: str | None = None
    model: str | None = None
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentSummary(Model):
    id: int
    name: str
    provider: str | None = None
    model: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Orchestration(Model):
    """Who speaks in a room: ``mode`` (sequential, round_robin, mention, supervisor) and its
    options."""

    mode: str = "sequential"
    max_rounds: int = 1
    selector_agent_id: int | None = None
    selector_provider: str | None = None
    selector_model: str | None = None
    default_agent_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomAgent(Model):
    """An agent's place in a room's speaking order."""

    room_id: int
    agent_id: int
    position: int
    agent: AgentSummary | None = None
    created_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Room(Model):
    id: int
    name: str
    description: str = ""
    instructions: str = ""
    orchestration: Orchestration = dataclasses.field(default_factory=Orchestration)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    agents: list[RoomAgent] = dataclasses.field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# -- conversations ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Session(Model):
    """A conversation with a room (``scope`` "room") or with one agent ("agent")."""

    id: int
    scope: str
    room_id: int | None = None
    agent_id: int | None = None
    title: str = ""
    multitask: str = "reject"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnError(Model):
    code: str
    message: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageTotals(Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Turn(Model):
    """One user message and its execution: ``pending`` or ``queued``, ``running``, then
    ``completed``, ``failed`` (see ``error``) or ``cancelled``."""

    id: int
    session_id: int
    status: str
    stop_reason: str | None = None
    error: TurnError | None = None
    attempt: int = 0
    input_message_id: int | None = None
    message_ids: list[int] = dataclasses.field(default_factory=list)
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    usage: UsageTotals = dataclasses.field(default_factory=UsageTotals)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the turn has ended (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message(Model):
    """A message of a session's history: the user's (step 0 of its turn) or an agent's."""

    id: int
    session_id: int
    turn_id: int
    role: str
    content: str = ""
    step: int = 0
    agent_id: int | None = None
    visibility: str = "shared"
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime | None = None


# -- files ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class File(Model):
    id: int
    name: str
    content_type: str = "application/octet-stream"
    size_bytes: int = 0
    sha256: str = ""
    text_status: str = ""
    page_count: int | None = None
    char_count: int = 0
    created_at: datetime | None = None


# -- usage ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageSums(Model):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentUsage(UsageSums):
    agent_id: int | None = None
    name: str | None = None
    deleted: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageGroup(AgentUsage):
    """One group of a usage report: only the key fields of its ``group_by`` are set."""

    room_id: int | None = None
    provider: str | None = None
    model: str | None = None
    day: date | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageReport(Model):
    totals: UsageSums = dataclasses.field(default_factory=UsageSums)
    groups: list[UsageGroup] = dataclasses.field(default_factory=list)
    group_by: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    truncated: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsageRecord(Model):
    """One LLM call."""

    id: int
    step: int = 0
    attempt: int = 1
    agent_id: int | None = None
    provider: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal(0)
    created_at: datetime | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnUsage(Model):
    turn_id: int
    totals: UsageSums = dataclasses.field(default_factory=UsageSums)
    by_agent: list[AgentUsage] = dataclasses.field(default_factory=list)
    records: list[UsageRecord] = dataclasses.field(default_factory=list)


# -- health -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Health(Model):
    status: str
    version: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Readiness(Health):
    """``status`` "ready" or "unavailable"; ``checks`` per dependency (``{"ok", "error"}``)."""

    checks: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ready"


# -- events -----------------------------------------------------------------------------------

MESSAGE_EVENTS = frozenset({"message", "tool_call", "tool_result"})


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a turn's or a session's stream.

    ``event``: status, plan, message, tool_call, tool_result, usage, progress, end (committed,
    with an ``id`` to resume after), or delta and superseded (``tokens=True``; no id). ``data``
    is the event's JSON object; every one has ``turn_id``.
    """

    event: str
    data: dict[str, Any]
    id: str | None = None

    @property
    def turn_id(self) -> int | None:
        value = self.data.get("turn_id")
        return value if isinstance(value, int) else None

    @property
    def turn(self) -> Turn | None:
        """The turn as it ended (on ``end``)."""
        return Turn.from_dict(self.data) if self.event == "end" else None

    @property
    def message(self) -> Message | None:
        """The message (on ``message``, ``tool_call`` and ``tool_result``)."""
        return Message.from_dict(self.data) if self.event in MESSAGE_EVENTS else None
