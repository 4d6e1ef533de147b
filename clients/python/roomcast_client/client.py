"""The clients: ``Roomcast`` (sync) and ``AsyncRoomcast`` (async), the same resources on each."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Generic, Self

import httpx

from ._methods import Async, Core, M, Sync
from ._program import Policy
from ._runners import AsyncRunner, SyncRunner
from .resources import (
    Agents,
    Auth,
    Files,
    HealthChecks,
    Messages,
    Rooms,
    Sessions,
    Turns,
    Usage,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
__version__ = "0.1.0"


def api_url(base_url: str | None) -> str:
    """The API root (``.../api/v1/``) of a server's URL (given with or without the prefix),
    from ``ROOMCAST_URL`` when none is given."""
    url = (base_url or os.environ.get("ROOMCAST_URL") or DEFAULT_URL).rstrip("/")
    return url.removesuffix(API_PREFIX) + API_PREFIX + "/"


def http_options(
    base_url: str | None,
    token: str | None,
    timeout: float,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """What both httpx clients are built with."""
    token = token if token is not None else os.environ.get("ROOMCAST_TOKEN")
    all_headers = {"User-Agent": f"roomcast-client/{__version__}", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    return {"base_url": api_url(base_url), "timeout": timeout, "headers": all_headers}


class _Client(Generic[M]):
    """The resources of a client (``M``: Sync or Async), and its connection settings.

    ``base_url``: the server (default ``ROOMCAST_URL``, else http://127.0.0.1:8000), with or
    without ``/api/v1``; ``token``: the bearer token (default ``ROOMCAST_TOKEN``).
    ``timeout``: seconds per request (long-polls and streams add their own wait).
    ``max_retries``: further attempts on 429/503 (after their Retry-After) and on connection
    failures that are safe to repeat, with exponential backoff from ``backoff`` seconds.
    ``headers``: more headers for every request. ``transport`` or ``http_client``: an httpx
    transport, or a whole httpx client (of the client's kind), to use instead of the default.
    """

    _runner: type[SyncRunner] | type[AsyncRunner]

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        http_client: httpx.Client | httpx.AsyncClient | None = None,
    ) -> None:
        kind = httpx.Client if self._runner is SyncRunner else httpx.AsyncClient
        if http_client is None:
            options = http_options(base_url, token, timeout, headers)
            http_client = kind(**options, transport=transport)  # type: ignore[arg-type]
        if not isinstance(http_client, kind):
            raise TypeError(f"{type(self).__name__} needs an {kind.__qualname__}")
        self._http = http_client
        policy = Policy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        core: Core[M] = Core(self._runner(http_client), policy)  # type: ignore[arg-type]
        self.auth = Auth(core)
        self.agents = Agents(core)
        self.rooms = Rooms(core)
        self.sessions = Sessions(core)
        self.turns = Turns(core)
        self.messages = Messages(core)
        self.files = Files(core)
        self.usage = Usage(core)
        self.health = HealthChecks(core)

    @property
    def base_url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:8000/api/v1/``."""
        return str(self._http.base_url)

    @property
    def token(self) -> str | None:
        """The bearer token sent (assign one to log in, e.g. from ``auth.create_token``)."""
        value = self._http.headers.get("Authorization", "")
        return value.removeprefix("Bearer ") or None

    @token.setter
    def token(self, value: str | None) -> None:
        if value:
            self._http.headers["Authorization"] = f"Bearer {value}"
        else:
            self._http.headers.pop("Authorization", None)


class Roomcast(_Client[Sync]):
    """The Roomcast API, synchronously::

    with Roomcast("http://127.0.0.1:8000", token="rc_...") as rc:
        agent = rc.agents.create(name="writer")
    """

    _runner = SyncRunner

    def close(self) -> None:
        assert isinstance(self._http, httpx.Client)
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRoomcast(_Client[Async]):
    """The Roomcast API for asyncio: the same resources as ``Roomcast``, whose methods are
    coroutines and whose lists and streams are async iterators::

        async with AsyncRoomcast() as rc:
            agent = await rc.agents.create(name="writer")
            async for event in rc.turns.stream(turn.id):
                ...
    """

    _runner = AsyncRunner

    async def aclose(self) -> None:
        assert isinstance(self._http, httpx.AsyncClient)
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
