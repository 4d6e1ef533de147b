"""A slow OpenAI-compatible chat completions server: every reply takes a fixed time.

    python -m bench.slow_llm --port 8105 --delay 2

It stands in for a real LLM in the benchmarks: a turn then spends seconds waiting on the network,
as in production, while the server itself costs next to nothing (one asyncio loop, one coroutine
per request, no framework), since it shares the machine's cores with what is measured.

- ``POST /v1/chat/completions`` (any path ending in ``/chat/completions``) answers after the
  delay with a ``chat.completion`` (one short assistant message, ``finish_reason`` ``stop``,
  usage estimated from the sizes). With ``"stream": true`` it answers at once with an event
  stream whose content chunks are spread over the delay, then a chunk with the finish reason, a
  usage chunk (``choices: []``) and ``data: [DONE]``.
- The delay is ``--delay`` seconds, or the one the model name asks for: ``delay-20`` (or
  ``delay-0.5s``) answers after 20 (0.5) seconds, so one server serves agents of several speeds;
  ``delay-20-30`` after a time drawn between 20 and 30 seconds for each call.
- ``GET /v1/models`` lists one model; ``GET /stats`` gives the requests served, the calls in
  flight and the most ever in flight at once (``?reset=1`` restarts the count from now): how many
  LLM calls the workers really made at the same time.

HTTP/1.1 with keep-alive; no TLS, no authentication (any API key is accepted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import time
from typing import Any

from .rlimits import raise_open_files_limit

DEFAULT_DELAY = 2.0
CHUNKS = 4
REPLY = "This reply took its time: it comes from the benchmark's slow LLM server."
_DELAY_MODEL = re.compile(r"(?:.*[^0-9.])?delay-([0-9]+(?:\.[0-9]+)?)(?:-([0-9]+(?:\.[0-9]+)?))?s?")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
}
MAX_BODY = 16 * 2**20


def delay_for(model: str, default: float) -> float:
    """The model name's ``delay-SECONDS`` if it has one (``delay-LOW-HIGH``: a delay drawn
    uniformly between the two, for each call), else ``default``."""
    match = _DELAY_MODEL.fullmatch(model or "")
    if not match:
        return default
    low, high = match.groups()
    return random.uniform(float(low), float(high)) if high else float(low)


def _usage(body: bytes, content: str) -> dict[str, int]:
    prompt = max(1, len(body) // 4)
    completion = max(1, len(content) // 4)
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _pieces(text: str, count: int) -> list[str]:
    """``text`` cut into ``count`` pieces at spaces (fewer if it has fewer words)."""
    words = text.split(" ")
    count = max(1, min(count, len(words)))
    size = -(-len(words) // count)
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [part + " " for part in parts[:-1]] + [parts[-1]]


class SlowLLM:
    """The server's state: its settings and its counts."""

    def __init__(self, delay: float = DEFAULT_DELAY, chunks: int = CHUNKS) -> None:
        self.delay = delay
        self.chunks = chunks
        self.served = 0
        self.in_flight = 0
        self.peak = 0
        self.connections = 0
        self._ids = 0

    def stats(self, reset: bool = False) -> dict[str, Any]:
        stats = {
            "served": self.served,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak,
            "connections": self.connections,
            "delay_s": self.delay,
        }
        if reset:
            self.served, self.peak = 0, self.in_flight
        return stats

    # -- HTTP ----------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; whether the connection stays open for another."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed an idle connection
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._send(writer, 400, {"error": {"message": "bad request line"}}, False)
            return False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif length := int(headers.get("content-length") or 0):
            if length > MAX_BODY:
                await self._send(writer, 413, {"error": {"message": "body too large"}}, False)
                return False
            body = await reader.readexactly(length)
        path, _, query = target.partition("?")
        if path.endswith("/chat/completions"):
            if method != "POST":
                await self._send(writer, 405, {"error": {"message": "use POST"}}, keep_alive)
            else:
                await self._complete(writer, body, keep_alive)
        elif path.endswith("/models") and method == "GET":
            model = {"id": "slow", "object": "model", "created": 0, "owned_by": "bench"}
            await self._send(writer, 200, {"object": "list", "data": [model]}, keep_alive)
        elif path == "/stats" and method == "GET":
            await self._send(writer, 200, self.stats(reset="reset=1" in query), keep_alive)
        else:
            await self._send(writer, 404, {"error": {"message": f"no {path}"}}, keep_alive)
        return keep_alive

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, keep_alive: bool
    ) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    # -- chat completions ------------------------------------------------------------------------

    async def _complete(self, writer: asyncio.StreamWriter, body: bytes, keep_alive: bool) -> None:
        try:
            request = json.loads(body)
            model = request["model"]
            if not isinstance(request["messages"], list):
                raise TypeError("messages")
        except (ValueError, KeyError, TypeError) as exc:
            error = {"message": f"not a chat completion request: {exc!r}", "type": "invalid"}
            await self._send(writer, 400, {"error": error}, keep_alive)
            return
        delay = delay_for(str(model), self.delay)
        self._ids += 1
        completion_id = f"chatcmpl-slow{self._ids}"
        created = int(time.time())
        usage = _usage(body, REPLY)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if request.get("stream"):
                await self._stream(writer, completion_id, created, model, delay, usage)
            else:
                await asyncio.sleep(delay)
                message = {"role": "assistant", "content": REPLY}
                choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                completion = {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
                await self._send(writer, 200, completion, keep_alive)
            self.served += 1
        finally:
            self.in_flight -= 1

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        completion_id: str,
        created: int,
        model: str,
        delay: float,
        usage: dict[str, int],
    ) -> None:
        """An event stream in chunked encoding (the connection stays open afterwards)."""

        def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **more,
            }
            event = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(event), event)

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        await writer.drain()
        pieces = _pieces(REPLY, self.chunks)
        started = time.monotonic()
        for index, piece in enumerate(pieces):
            due = started + delay * (index + 1) / len(pieces)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            delta: dict[str, Any] = {"content": piece}
            if index == 0:
                delta["role"] = "assistant"
            writer.write(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
            await writer.drain()
        done = b"data: [DONE]\n\n"
        writer.write(
            chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            + chunk([], usage=usage)
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)
        )
        await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def serve(
    host: str,
    port: int,
    delay: float = DEFAULT_DELAY,
    chunks: int = CHUNKS,
    started: asyncio.Future | None = None,
) -> None:
    """Serve until cancelled; ``started`` gets the bound port (``port`` 0 picks a free one)."""
    llm = SlowLLM(delay, chunks)
    server = await asyncio.start_server(llm.handle, host, port, backlog=4096, limit=2**20)
    if started is not None:
        started.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def catalog_toml(base_url: str, *, name: str = "slow", timeout: float = 120.0) -> str:
    """A ROOMCAST_PROVIDERS_FILE entry for this server (``base_url`` ends in ``/v1``)."""
    return (
        f"[providers.{name}]\n"
        'type = "openai"\n'
        f'base_url = "{base_url}"\n'
        'api_key_env = "BENCH_SLOW_LLM_KEY"\n'
        f'default_model = "delay-{DEFAULT_DELAY:g}"\n'
        f"timeout = {timeout:g}\n"
        "max_retries = 0\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8105)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds per reply")
    parser.add_argument("--chunks", type=int, default=CHUNKS, help="content chunks per stream")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    print(f"slow LLM on http://{args.host}:{args.port}/v1 ({args.delay:g} s per reply)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.delay, args.chunks))


if __name__ == "__main__":
    main()
