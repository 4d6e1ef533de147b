"""Prometheus metrics of the API and the workers (prometheus-client), and the queue's state.

Processes count what they do (requests, turns ended, LLM and tool calls); the state of the
queue (unfinished turns, the oldest queued one, the outbox backlog) is read from the database
when scraped, so every process reports the same and nothing on the turn path pays for it.

Under gunicorn or Celery's prefork pool, several processes count: set PROMETHEUS_MULTIPROC_DIR
to an empty directory (cleared before the processes start), each process writes its samples
there and a scrape adds them up (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .base import utcnow
from .turns import PENDING, QUEUED, RUNNING, Turn

UNFINISHED = (PENDING, QUEUED, RUNNING)
# Request latencies: an API answer takes milliseconds, a long-poll up to a minute.
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Turns and LLM calls: from an instant answer to minutes of a slow model.
TURN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "roomcast_http_requests", "API requests answered.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "roomcast_http_request_duration_seconds",
    "Time to answer an API request (to the first byte of a stream).",
    ["method", "route"],
    buckets=REQUEST_BUCKETS,
)
TURNS_ENDED = Counter("roomcast_turns_ended", "Turns that ended.", ["status", "stop_reason"])
QUEUE_WAIT = Histogram(
    "roomcast_turn_queue_wait_seconds",
    "From a turn's acceptance to its first claim by a worker.",
    buckets=TURN_BUCKETS,
)
TURN_SECONDS = Histogram(
    "roomcast_turn_duration_seconds",
    "From the claim of the attempt that ended a turn to its end.",
    buckets=TURN_BUCKETS,
)
LLM_CALLS = Counter("roomcast_llm_calls", "LLM calls made.", ["provider", "model", "outcome"])
LLM_SECONDS = Histogram(
    "roomcast_llm_call_duration_seconds",
    "LLM call latency, retries included.",
    ["provider", "model"],
    buckets=TURN_BUCKETS,
)
LLM_TOKENS = Counter("roomcast_llm_tokens", "Tokens of LLM calls.", ["provider", "model", "kind"])
LLM_COST = Counter("roomcast_llm_cost_usd", "Cost of LLM calls, USD.", ["provider", "model"])
TOOL_CALLS = Counter("roomcast_tool_calls", "Tool calls run.", ["tool", "status"])
WEBHOOK_ATTEMPTS = Counter(
    "roomcast_webhook_attempts", "Webhook delivery attempts, by what followed.", ["outcome"]
)


def observe_llm_call(
    provider: str,
    model: str,
    outcome: str,
    seconds: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost: Any = 0,
) -> None:
    LLM_CALLS.labels(provider, model, outcome).inc()
    LLM_SECONDS.labels(provider, model).observe(seconds)
    if prompt_tokens:
        LLM_TOKENS.labels(provider, model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        LLM_TOKENS.labels(provider, model, "completion").inc(completion_tokens)
    if cost:
        LLM_COST.labels(provider, model).inc(float(cost))


def queue_state(db: Session) -> dict[str, Any]:
    """Unfinished turns by status, expired leases, the outbox backlog, the oldest queued turn."""
    now = utcnow()
    counts = dict(
        db.execute(
            select(Turn.status, func.count())
            .where(Turn.status.in_(UNFINISHED))
            .group_by(Turn.status)
        ).all()
    )
    oldest_queued = db.scalar(select(func.min(Turn.created_at)).where(Turn.status == QUEUED))
    return {
        **{status: counts.get(status, 0) for status in UNFINISHED},
        "running_with_expired_lease": db.scalar(
            select(func.count()).where(Turn.status == RUNNING, Turn.lease_expires_at < now)
        ),
        "outbox_backlog": db.scalar(
            select(func.count()).where(Turn.status == QUEUED, Turn.dispatched_at.is_(None))
        ),
        "oldest_queued_age_seconds": (
            (now - oldest_queued).total_seconds() if oldest_queued else None
        ),
    }


class QueueCollector:
    """The queue's state as gauges, read from the database at each scrape."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.sessions = sessions

    def collect(self):
        with self.sessions() as db:
            state = queue_state(db)
        turns = GaugeMetricFamily(
            "roomcast_turns_unfinished", "Unfinished turns.", labels=["status"]
        )
        for status in UNFINISHED:
            turns.add_metric([status], state[status])
        yield turns
        yield GaugeMetricFamily(
            "roomcast_turns_expired_leases",
            "Running turns whose lease expired (their worker died; the reaper hands them on).",
            value=state["running_with_expired_lease"],
        )
        yield GaugeMetricFamily(
            "roomcast_outbox_backlog",
            "Queued turns not yet handed to the broker (it was down).",
            value=state["outbox_backlog"],
        )
        yield GaugeMetricFamily(
            "roomcast_oldest_queued_turn_age_seconds",
            "Age of the oldest queued turn (0 when none waits).",
            value=state["oldest_queued_age_seconds"] or 0,
        )


class _Exposition:
    """What a scrape shows: the counts (this process's, or every process's in multiprocess
    mode) and the queue's state."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.queue = QueueCollector(sessions)

    def collect(self):
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            yield from MultiProcessCollector(None).collect()
        else:
            yield from REGISTRY.collect()
        yield from self.queue.collect()


def _registry(sessions: Callable[[], Session]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Exposition(sessions))
    return registry


def scrape(sessions: Callable[[], Session]) -> tuple[bytes, str]:
    """The exposition for one scrape; returns (body, content type)."""
    return generate_latest(_registry(sessions)), CONTENT_TYPE_LATEST


def metrics_server(port: int, address: str, sessions: Callable[[], Session]) -> None:
    """Serve the exposition on http://address:port/metrics from a daemon thread (workers)."""
    start_http_server(port, addr=address, registry=_registry(sessions))
