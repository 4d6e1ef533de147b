"""The contract between the API (which sends tasks by name) and the worker (which runs them).

Task names, queues and the Celery configuration live here so both sides agree without importing
each other.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from .broker import REDIS_TRANSPORT
from .settings import Settings

PING = "roomcast.ping"
EXECUTE_TURN = "roomcast.turns.execute"
SWEEP_OUTBOX = "roomcast.maintenance.sweep_outbox"
REAP_TURNS = "roomcast.maintenance.reap_turns"
DELIVER_WEBHOOK = "roomcast.webhooks.deliver"
SWEEP_WEBHOOKS = "roomcast.maintenance.sweep_webhooks"

# Seconds between maintenance runs (Celery beat in production, a timer in embedded mode).
OUTBOX_SWEEP_INTERVAL = 5.0
REAPER_INTERVAL = 10.0
WEBHOOK_SWEEP_INTERVAL = 5.0

# A broker that is down must not hold a request for long: one quick retry, then a sweep takes
# over (what the task is for is already committed, so it is never lost).
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}

# A task header: the id of the API request that sent a turn's task, for the worker's log lines.
REQUEST_ID_TASK_HEADER = "roomcast_request_id"

TURNS_QUEUE = "turns"
MAINTENANCE_QUEUE = "maintenance"
# Webhook deliveries: a queue of their own, so a slow receiver never delays a turn's task.
WEBHOOKS_QUEUE = "webhooks"

# An embedded (in-memory) broker is polled; kombu's default of once a second would make every
# turn wait up to a second. 5 ms measured a 5 ms p50 round trip with an in-process worker.
EMBEDDED_POLLING_INTERVAL = 0.005

# A turn's time limits. At the soft one the turn ends failed (turn_timeout); the hard one kills
# the task (its turn is then taken over when its lease runs out). Celery's gevent pool, the
# shipped worker's, enforces only the hard limit: worker/execution.py raises the soft one itself
# there. The Redis visibility timeout must exceed the hard limit, or Redis redelivers a turn that
# is still running to a second worker.
TASK_SOFT_TIME_LIMIT = 300
TASK_TIME_LIMIT = 330
VISIBILITY_TIMEOUT = TASK_TIME_LIMIT + 270

# Recycling pool processes, for the prefork pool only (Celery: "pool support: prefork"; the
# gevent, threads and solo pools ignore both). A prefork child runs one turn at a time and is
# replaced only after its task ends, so nothing is cut short. After 1000 tasks: a slow leak (in a
# C extension, say) stays bounded, for the price of one fork and one new database connection per
# thousand turns. Past 300,000 KiB of peak resident memory (a child starts at about 110 MB):
# a child that grew that much holds a leak or a huge context, and a fresh one is cheap. A gevent
# worker (what ships) is one process for hundreds of turns: bound its memory from outside
# (docker-compose.yml's mem_limit and restart policy).
MAX_TASKS_PER_CHILD = 1000
MAX_MEMORY_PER_CHILD_KIB = 300_000


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the API's producer and the workers."""
    transport_options: dict[str, Any]
    if settings.embedded_broker:
        transport_options = {"polling_interval": EMBEDDED_POLLING_INTERVAL}
    else:
        transport_options = {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # A broker that is down must not hang a request: fail fast, the outbox retries.
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        }
    result_backend = settings.result_backend
    if result_backend is None:
        result_backend = "cache+memory://" if settings.embedded_broker else settings.broker_url
    config = {
        "broker_url": settings.broker_url,
        "result_backend": result_backend,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2,
        "task_queues": (Queue(TURNS_QUEUE), Queue(MAINTENANCE_QUEUE), Queue(WEBHOOKS_QUEUE)),
        "task_default_queue": TURNS_QUEUE,
        "task_routes": {
            "roomcast.maintenance.*": {"queue": MAINTENANCE_QUEUE},
            "roomcast.webhooks.*": {"queue": WEBHOOKS_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # At-least-once delivery: a task is acknowledged after it ran, and requeued when the worker
        # process dies under it. Every task is written to be idempotent for that reason.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A worker takes at most one message per slot of its pool (--concurrency): a turn does
        # not wait behind another in one worker while a second worker idles. Under gevent each
        # message taken starts at once (one more may wait for a free slot); on a warm shutdown
        # a message taken but not started is run as a slot frees or handed back to the queue
        # (tests/test_worker_shutdown.py).
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
        "task_time_limit": TASK_TIME_LIMIT,
        "worker_max_tasks_per_child": MAX_TASKS_PER_CHILD,
        "worker_max_memory_per_child": MAX_MEMORY_PER_CHILD_KIB,
        # Flower and other monitors see task names and arguments (ids only), from the worker's
        # events. The producer's "task-sent" event is off: a second broker publish on every
        # turn POST, for a "sent" state the turn's own status (queued) already shows.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "result_expires": 3600,
        # One result backend (a Redis client with its pool) per process. Otherwise Celery keeps
        # one per thread, and under gevent every greenlet is a thread: each task built a new
        # backend, 4% of a busy worker's CPU.
        "result_backend_thread_safe": True,
    }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        config["broker_transport"] = REDIS_TRANSPORT
    return config
