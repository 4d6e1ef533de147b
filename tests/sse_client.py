"""Reading a server-sent event stream from the Flask test client, event by event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class SSE:
    name: str
    data: Any
    id: str | None = None


class EventReader:
    """The events (and comment lines) of a streamed response, as they come."""

    def __init__(self, response) -> None:
        self.response = response
        self._chunks = iter(response.response)
        self._buffer = ""
        self.comments = 0
        self.retry: int | None = None

    def __iter__(self):
        return self

    def __next__(self) -> SSE:
        while True:
            block, sep, rest = self._buffer.partition("\n\n")
            if sep:
                self._buffer = rest
                event = self._parse(block)
                if event is not None:
                    return event
                continue
            chunk = next(self._chunks)  # StopIteration: the server closed the stream
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk

    def _parse(self, block: str) -> SSE | None:
        name, data, event_id = "message", [], None
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("retry: "):
                self.retry = int(line[7:])
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line.startswith("id: "):
                event_id = line[4:]
        if not data:
            return None
        return SSE(name, json.loads("\n".join(data)), event_id)

    def until(self, name: str) -> list[SSE]:
        """Events up to and including the first called ``name``."""
        events = []
        for event in self:
            events.append(event)
            if event.name == name:
                return events
        raise AssertionError(f"the stream closed before {name!r}: {[e.name for e in events]}")

    def rest(self) -> list[SSE]:
        return list(self)

    def close(self) -> None:
        self.response.close()


def open_stream(client, user, path, last_event_id=None, **params) -> EventReader:
    headers = dict(user.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = client.get(path, headers=headers, query_string=params, buffered=False)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    return EventReader(response)
