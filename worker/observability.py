"""The worker's log lines and metrics: JSON (or text) logs with the turn's ids, and a metrics
port of its own (ROOMCAST_WORKER_METRICS_PORT, on ROOMCAST_METRICS_ADDRESS)."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_ready

from models import logs
from models.settings import Settings
from models.tasking import DELIVER_WEBHOOK, EXECUTE_TURN, REQUEST_ID_TASK_HEADER

log = logging.getLogger(__name__)


def install(app: Celery, settings: Settings) -> None:
    @setup_logging.connect(weak=False)
    def configure(**_kwargs) -> None:
        # Connected, this replaces Celery's own logging set-up: its lines take our format too.
        logs.configure_logging(settings.log_level, settings.log_format)

    @task_prerun.connect(weak=False)
    def bind_turn(task=None, args=None, **_kwargs) -> None:
        logs.clear()
        if task is not None and task.name in (EXECUTE_TURN, DELIVER_WEBHOOK) and args:
            logs.bind(turn_id=args[0], request_id=task.request.get(REQUEST_ID_TASK_HEADER))

    @task_postrun.connect(weak=False)
    def unbind(**_kwargs) -> None:
        logs.clear()

    @worker_ready.connect(weak=False)
    def serve_metrics(**_kwargs) -> None:
        if settings.worker_metrics_port is None:
            return
        # Under the prefork pool the children count too (PROMETHEUS_MULTIPROC_DIR, see
        # models/metrics.py); the scrape adds the queue's state from the database.
        from models.metrics import metrics_server

        from . import db

        metrics_server(settings.worker_metrics_port, settings.metrics_address, db.session)
        log.info(
            "worker metrics on http://%s:%s/metrics",
            settings.metrics_address,
            settings.worker_metrics_port,
        )
