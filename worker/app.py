"""The worker's Celery app, configured from the same settings as the API."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import celeryd_after_setup, worker_init, worker_process_init

from models.cooperative import (
    gevent_patched,
    probe_sockets_directly,
    require_cooperative_psycopg,
)
from models.heap import freeze_startup_objects
from models.settings import Settings
from models.tasking import (
    OUTBOX_SWEEP_INTERVAL,
    REAP_TURNS,
    REAPER_INTERVAL,
    SWEEP_OUTBOX,
    SWEEP_WEBHOOKS,
    WEBHOOK_SWEEP_INTERVAL,
    celery_config,
)

from . import db, observability
from .event_batches import BatchedTaskEvents

log = logging.getLogger(__name__)
settings = Settings.from_env()

app = Celery("roomcast", include=["worker.tasks"])
app.conf.update(celery_config(settings))
app.conf.beat_schedule = {
    "sweep-outbox": {"task": SWEEP_OUTBOX, "schedule": OUTBOX_SWEEP_INTERVAL},
    "reap-turns": {"task": REAP_TURNS, "schedule": REAPER_INTERVAL},
    "sweep-webhooks": {"task": SWEEP_WEBHOOKS, "schedule": WEBHOOK_SWEEP_INTERVAL},
}
db.configure(settings)
db.send_webhooks_with(app)
observability.install(app, settings)
app.steps["consumer"].add(BatchedTaskEvents)


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # A forked pool process must not share the parent's database sockets.
    db.reset()


@worker_init.connect  # every worker, before it consumes
@celeryd_after_setup.connect  # `celery worker` again, once its logging is set up: the log line
def _require_cooperative_driver(**_kwargs) -> None:
    # A gevent worker runs its turns on one thread: a driver that blocks it would run them one
    # at a time. Raises (the worker does not start) if psycopg cannot cooperate.
    log.info(
        "worker %s; psycopg waits with %s",
        "gevent-patched" if gevent_patched() else "not gevent-patched",
        require_cooperative_psycopg(),
    )
    probe_sockets_directly()


@celeryd_after_setup.connect  # `celery worker` only (not a worker embedded in another process)
def _freeze_startup_objects(**_kwargs) -> None:
    # Set up: what the process holds now lives as long as it (models/heap.py). A prefork pool's
    # children, forked after this, inherit the frozen objects.
    freeze_startup_objects()
