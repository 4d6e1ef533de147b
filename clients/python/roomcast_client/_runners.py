"""Runners: carry out a program's commands (``_program.py``) with httpx, sync or async.

They only do I/O; every decision (retries, pages, reconnections) is the program's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import anyio
import httpx
from httpx_sse import EventSource, ServerSentEvent

from ._program import Close, Command, Emit, NextEvent, Program, Request, Send, Sleep

T = TypeVar("T")
E = TypeVar("E", Iterator[ServerSentEvent], AsyncIterator[ServerSentEvent])


class Stepper(Generic[E]):
    """One program's progress: what to send it next, and the event streams it has open."""

    def __init__(self, program: Program[Any]) -> None:
        self.program = program
        self.streams: dict[httpx.Response, E] = {}
        self.result: Any = None
        self._value: Any = None
        self._error: BaseException | None = None

    def next(self) -> Command | None:
        """The program's next command; None once it has returned (its value in ``result``)."""
        value, error = self._value, self._error
        self._value = self._error = None
        try:
            return self.program.throw(error) if error else self.program.send(value)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def answer(self, value: Any) -> None:
        """The command's result; a network failure is thrown into the program, which decides
        (retry, resume, raise)."""
        if isinstance(value, httpx.TransportError):
            self._error = value
        else:
            self._value = value


def http_request(http: httpx.Client | httpx.AsyncClient, request: Request) -> httpx.Request:
    timeout = http.timeout
    if request.read_timeout is not None:
        timeout = httpx.Timeout(
            connect=timeout.connect,
            read=request.read_timeout,
            write=timeout.write,
            pool=timeout.pool,
        )
    return http.build_request(
        request.method,
        request.path.lstrip("/"),
        params=request.params,
        json=request.json,
        files=request.files,
        headers=dict(request.headers),
        timeout=timeout,
    )


class SyncRunner:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, program: Program[T]) -> T:
        stepper: Stepper[Iterator[ServerSentEvent]] = Stepper(program)
        for item in self._steps(stepper):
            raise TypeError(f"a call emitted {item!r}")
        result: T = stepper.result
        return result

    def iterate(self, program: Program[None]) -> Iterator[Any]:
        return self._steps(Stepper(program))

    def _steps(self, stepper: Stepper[Iterator[ServerSentEvent]]) -> Iterator[Any]:
        try:
            while (command := stepper.next()) is not None:
                if isinstance(command, Emit):
                    yield command.item
                else:
                    stepper.answer(self._do(command, stepper))
        finally:
            stepper.program.close()
            for response in stepper.streams:
                response.close()

    def _do(self, command: Command, stepper: Stepper[Iterator[ServerSentEvent]]) -> Any:
        try:
            return self._perform(command, stepper)
        except httpx.TransportError as exc:
            return exc

    def _perform(self, command: Command, stepper: Stepper[Iterator[ServerSentEvent]]) -> Any:
        if isinstance(command, Send):
            response = self.http.send(http_request(self.http, command.request), stream=True)
            if command.stream and response.status_code == 200:
                stepper.streams[response] = EventSource(response).iter_sse()
            else:
                response.read()
                response.close()
            return response
        if isinstance(command, NextEvent):
            return next(stepper.streams[command.response], None)
        if isinstance(command, Close):
            stepper.streams.pop(command.response, None)
            command.response.close()
        elif isinstance(command, Sleep):
            time.sleep(command.seconds)
        return None


class AsyncRunner:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, program: Program[T]) -> T:
        stepper: Stepper[AsyncIterator[ServerSentEvent]] = Stepper(program)
        async for item in self._steps(stepper):
            raise TypeError(f"a call emitted {item!r}")
        result: T = stepper.result
        return result

    def iterate(self, program: Program[None]) -> AsyncIterator[Any]:
        return self._steps(Stepper(program))

    async def _steps(self, stepper: Stepper[AsyncIterator[ServerSentEvent]]) -> AsyncIterator[Any]:
        try:
            while (command := stepper.next()) is not None:
                if isinstance(command, Emit):
                    yield command.item
                else:
                    stepper.answer(await self._do(command, stepper))
        finally:
            stepper.program.close()
            for response in stepper.streams:
                await response.aclose()

    async def _do(self, command: Command, stepper: Stepper[AsyncIterator[ServerSentEvent]]) -> Any:
        try:
            return await self._perform(command, stepper)
        except httpx.TransportError as exc:
            return exc

    async def _perform(
        self, command: Command, stepper: Stepper[AsyncIterator[ServerSentEvent]]
    ) -> Any:
        if isinstance(command, Send):
            request = http_request(self.http, command.request)
            response = await self.http.send(request, stream=True)
            if command.stream and response.status_code == 200:
                stepper.streams[response] = EventSource(response).aiter_sse()
            else:
                await response.aread()
                await response.aclose()
            return response
        if isinstance(command, NextEvent):
            return await anext(stepper.streams[command.response], None)
        if isinstance(command, Close):
            stepper.streams.pop(command.response, None)
            await command.response.aclose()
        elif isinstance(command, Sleep):
            await anyio.sleep(command.seconds)
        return None
