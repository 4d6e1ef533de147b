"""The worker's Celery app, configured from the same settings as the API."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from models.settings import Settings
from models.tasking import (
    OUTBOX_SWEEP_INTERVAL,
    REAP_TURNS,
    REAPER_INTERVAL,
    SWEEP_OUTBOX,
    celery_config,
)

from . import db, observability

settings = Settings.from_env()

app = Celery("roomcast", include=["worker.tasks"])
app.conf.update(celery_config(settings))
app.conf.beat_schedule = {
    "sweep-outbox": {"task": SWEEP_OUTBOX, "schedule": OUTBOX_SWEEP_INTERVAL},
    "reap-turns": {"task": REAP_TURNS, "schedule": REAPER_INTERVAL},
}
db.configure(settings)
observability.install(app, settings)


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # A forked pool process must not share the parent's database sockets.
    db.reset()
