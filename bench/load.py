"""Requests per second on one URL with N keep-alive connections: wrk when installed (it costs
the server's 2 cores far less than a Python client), else a Python client with one thread per
connection. The tool used is part of every figure's conditions."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from .client import Client, latency_summary

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def tool(prefer: str = "auto") -> str:
    if prefer == "python" or (prefer == "auto" and shutil.which("wrk") is None):
        return "python"
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), use --load python")
    return "wrk"


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles and error counts from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"wrk failed:\n{output}")
    latency = {
        f"p{p}_ms": round(_ms(v), 2)
        for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)
    }
    total = re.search(r"(\d+) requests in", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    return {
        "requests_per_s": round(float(rps.group(1)), 1),
        "requests": int(total.group(1)) if total else 0,
        "latency": latency,
        "errors": int(bad.group(1)) if bad else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def run_wrk(
    url: str, *, connections: int, duration: float, headers: dict[str, str]
) -> dict[str, Any]:
    argv = [
        "wrk",
        "--threads",
        str(min(2, connections)),
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(done.stdout + done.stderr)


def run_python(
    url: str, *, connections: int, duration: float, headers: dict[str, str]
) -> dict[str, Any]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    base = f"{parts.scheme}://{parts.netloc}"
    samples: list[list[float]] = [[] for _ in range(connections)]
    bad = [0] * connections
    stop_at = [0.0]
    barrier = threading.Barrier(connections + 1)

    def loop(index: int) -> None:
        client = Client(base)
        barrier.wait()
        while (now := time.perf_counter()) < stop_at[0]:
            response = client.get(path, headers=headers)
            samples[index].append(time.perf_counter() - now)
            if response.status >= 400:
                bad[index] += 1
        client.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + duration
    barrier.wait()
    for thread in threads:
        thread.join(duration + 30)
    elapsed = time.perf_counter() - started
    flat = [s for per in samples for s in per]
    summary = latency_summary(flat)
    return {
        "requests_per_s": round(len(flat) / elapsed, 1),
        "requests": len(flat),
        "latency": {k: summary[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
        "errors": sum(bad),
        "socket_errors": None,
    }


def requests_per_second(
    url: str,
    *,
    connections: int,
    duration: float,
    headers: dict[str, str] | None = None,
    load: str = "auto",
) -> dict[str, Any]:
    """Hammer ``url`` (GET) for ``duration`` seconds; requests/s and latency percentiles."""
    runner = run_wrk if tool(load) == "wrk" else run_python
    result = runner(url, connections=connections, duration=duration, headers=headers or {})
    result["tool"] = tool(load)
    result["connections"] = connections
    return result


def fmt_rps(result: dict[str, Any]) -> str:
    lat = result["latency"]
    text = (
        f"{result['requests_per_s']:>8.1f} req/s  p50 {lat.get('p50_ms', float('nan')):.2f} ms  "
        f"p99 {lat.get('p99_ms', float('nan')):.2f} ms"
    )
    if result["errors"]:
        text += f"  ERRORS {result['errors']}"
    if result.get("socket_errors"):
        text += f"  socket errors: {result['socket_errors']}"
    return text
