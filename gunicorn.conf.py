"""gunicorn's settings for the API: the Dockerfile's command passes ``--config gunicorn.conf.py``.

Metrics: each gunicorn worker is a process with counts of its own. prometheus-client's
multiprocess mode has every worker write its samples under PROMETHEUS_MULTIPROC_DIR and a scrape
of any worker add them all up (models/metrics.py). prometheus-client picks its mode once, when a
process first imports it: the workers import the app after they fork, so the variable set here,
in the master before any worker starts, reaches them all (do not use --preload with it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_made_here: list[str] = []


def on_starting(server) -> None:
    """Empty the metrics directory (docker-compose.yml names one), or make one of our own."""
    path = os.environ.get(MULTIPROC_DIR)
    if not path:
        path = tempfile.mkdtemp(prefix="roomcast-metrics-")
        os.environ[MULTIPROC_DIR] = path
        _made_here.append(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    # A previous run's samples would be added to this one's; only prometheus-client's files go,
    # in case the variable names a directory that holds anything else.
    for stale in Path(path).glob("*.db"):
        stale.unlink()
    server.log.info("metrics of every worker under %s", path)


def post_worker_init(worker) -> None:
    # The worker has loaded the app: what it holds now lives as long as it (models/heap.py).
    from models.heap import freeze_startup_objects

    freeze_startup_objects()


def child_exit(server, worker) -> None:
    # A dead worker's counters stay (they are part of the totals); its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    for path in _made_here:
        shutil.rmtree(path, ignore_errors=True)
