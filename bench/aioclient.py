"""A cheap asyncio HTTP/1.1 client for many concurrent benchmark clients: one keep-alive
connection each over asyncio streams, no threads, no client library.

It speaks only what the benchmarks need: requests with a JSON body or none, responses with a
Content-Length, chunked or read to the end of the connection, and Server-Sent Events
(``text/event-stream``) parsed as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .client import Response


class HTTPError(RuntimeError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"unexpected {status}: {body[:300]!r}")
        self.status = status
        self.body = body


@dataclass
class Event:
    """One server-sent event, with the times the client had it (``time.perf_counter`` and
    ``time.time``)."""

    name: str
    data: str
    received: float
    received_wall: float

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules: ``event:``, ``data:`` lines
    joined with newlines, ``id:`` and ``retry:`` ignored, ``:`` comments skipped, an event
    dispatched at a blank line; an event without ``event:`` is a ``message``)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._name = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> Iterator[tuple[str, str]]:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            line = self._buffer[:end].rstrip(b"\r").decode()
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data or self._name:
                    yield self._name or "message", "\n".join(self._data)
                self._name, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self._name = value
            elif field == "data":
                self._data.append(value)


class Connection:
    """One keep-alive HTTP/1.1 connection (reconnected when the server closed it)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.headers = {"Host": f"{self.host}:{self.port}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def _open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=2**20
            )
            self.connects += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _send(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        if body is not None:
            lines.append("Content-Type: application/json")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(payload)}")
        assert self.writer is not None
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _body_parts(self, headers: dict[str, str], method: str, status: int):
        """The body as it arrives, in pieces; the connection is closed after a body that ends
        with the connection."""
        assert self.reader is not None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                yield await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                yield await self.reader.readexactly(length)
        else:
            while data := await self.reader.read(65536):
                yield data
            self.close()
            return
        if headers.get("connection", "").lower() == "close":
            self.close()

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        """One request and its whole response. A kept-alive connection that the server closed
        meanwhile is reopened once (send an Idempotency-Key with a POST that must not repeat)."""
        for attempt in (1, 2):
            reused = self.writer is not None
            try:
                async with asyncio.timeout(self.timeout):
                    await self._open()
                    await self._send(method, path, body, headers)
                    status, response_headers = await self._head()
                    data = b"".join(
                        [part async for part in self._body_parts(response_headers, method, status)]
                    )
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2 or not reused:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            return Response(status, response_headers, data)
        raise AssertionError("unreachable")

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Response:
        return await self.request("POST", path, body, headers)

    async def events(
        self, path: str, *, until: str = "end", timeout: float | None = None
    ) -> list[Event]:
        """``GET path`` as an event stream, read until the event ``until`` (or the stream's end).

        Raises HTTPError unless the answer is 200 ``text/event-stream``. After ``until`` the rest
        of the stream is read if it ends promptly (the connection then serves the next request),
        else the connection is closed.
        """
        got: list[Event] = []
        parser = SSEParser()
        for attempt in (1, 2):
            reused = self.writer is not None
            try:
                async with asyncio.timeout(timeout or self.timeout):
                    await self._open()
                    await self._send("GET", path, None, {"Accept": "text/event-stream"})
                    status, headers = await self._head()
                    parts = self._body_parts(headers, "GET", status)
                    if status != 200 or not headers.get("content-type", "").startswith(
                        "text/event-stream"
                    ):
                        raise HTTPError(status, b"".join([part async for part in parts]))
                    async for part in parts:
                        now, wall = time.perf_counter(), time.time()
                        for name, data in parser.feed(part):
                            got.append(Event(name, data, now, wall))
                        if got and got[-1].name == until:
                            break
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2 or not reused or got:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            break
        if got and got[-1].name == until:
            await self._drain(parts)
        return got

    async def _drain(self, parts) -> None:
        try:
            async with asyncio.timeout(1.0):
                async for _ in parts:
                    pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            self.close()
