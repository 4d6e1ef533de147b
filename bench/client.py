"""A small keep-alive HTTP client and the statistics every benchmark prints.

The measured requests go through ``Client``, one bare HTTP/1.1 connection: its own cost is all
but nil, so the figures are the API's. Set-up steps (agents, sessions) use the Python client
(``setup_client``), whose retries, typed results and checks would only add to a measured
request.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from roomcast_client import Roomcast

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One HTTP/1.1 keep-alive connection to the API (one per thread; not thread-safe)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = {**self.headers, **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        # A kept-alive connection the server closed while idle fails on first use: reconnect once.
        for attempt in (1, 2):
            conn = self._connect()
            try:
                conn.request(method, path, body=payload, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        raise AssertionError("unreachable")

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Response:
        return self.request("POST", path, body=body, headers=headers)

    def expect(self, response: Response, *statuses: int) -> Response:
        if response.status not in statuses:
            raise RuntimeError(f"unexpected {response.status}: {response.body[:500]!r}")
        return response


def setup_client(base_url: str, token: str | None) -> Roomcast:
    """The Python client, for set-up steps only (see above)."""
    return Roomcast(base_url, token=token or "", timeout=60)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds (and the count)."""
    values = sorted(s * 1000 for s in seconds)
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(values[-1], 2) if values else math.nan,
    }


def fmt_latency(summary: dict[str, float]) -> str:
    return (
        f"p50 {summary['p50_ms']:.2f} ms  p90 {summary['p90_ms']:.2f} ms  "
        f"p99 {summary['p99_ms']:.2f} ms  max {summary['max_ms']:.2f} ms  (n={summary['n']})"
    )


def add_target_args(parser) -> None:
    """--base-url and --token, shared by every script that talks to a running API."""
    parser.add_argument(
        "--base-url",
        default=os.environ.get("BENCH_BASE_URL", "http://127.0.0.1:8000"),
        help="the API to measure (default: $BENCH_BASE_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BENCH_TOKEN"),
        help="a bearer token (default: $BENCH_TOKEN); make one with "
        "'flask --app api users create EMAIL'",
    )


def monotonic() -> float:
    return time.perf_counter()
