"""The Python client of the Roomcast API: ``Roomcast`` (sync) and ``AsyncRoomcast`` (async).

from roomcast_client import Roomcast, NotFound

rc = Roomcast("http://127.0.0.1:8000", token="rc_...")   # or ROOMCAST_URL / ROOMCAST_TOKEN
agent = rc.agents.create(name="writer", provider="instant")
session = rc.sessions.create(agent_id=agent.id)
turn = rc.turns.wait(rc.turns.create(session.id, "Hello!").id)
"""

from .client import DEFAULT_URL, AsyncRoomcast, Roomcast, __version__
from .errors import (
    APIConnectionError,
    APIError,
    Conflict,
    NotFound,
    RateLimited,
    RoomcastError,
    Unauthorized,
    UnexpectedResponse,
    ValidationError,
    WaitTimeout,
)
from .models import (
    Agent,
    AgentSummary,
    AgentUsage,
    Event,
    File,
    Health,
    Message,
    Model,
    NewToken,
    Orchestration,
    Readiness,
    Room,
    RoomAgent,
    Session,
    Token,
    Turn,
    TurnError,
    TurnUsage,
    UsageGroup,
    UsageRecord,
    UsageReport,
    UsageSums,
    UsageTotals,
    User,
)

__all__ = [
    "DEFAULT_URL",
    "APIConnectionError",
    "APIError",
    "Agent",
    "AgentSummary",
    "AgentUsage",
    "AsyncRoomcast",
    "Conflict",
    "Event",
    "File",
    "Health",
    "Message",
    "Model",
    "NewToken",
    "NotFound",
    "Orchestration",
    "RateLimited",
    "Readiness",
    "Room",
    "RoomAgent",
    "Roomcast",
    "RoomcastError",
    "Session",
    "Token",
    "Turn",
    "TurnError",
    "TurnUsage",
    "Unauthorized",
    "UnexpectedResponse",
    "UsageGroup",
    "UsageRecord",
    "UsageReport",
    "UsageSums",
    "UsageTotals",
    "User",
    "ValidationError",
    "WaitTimeout",
    "__version__",
]
