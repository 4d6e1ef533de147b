"""The round trip API producer -> broker -> worker -> database, on the test back end."""

import os
import subprocess
import sys
import uuid

import pytest

from models.tasking import PING
from tests.conftest import BROKER_URL


def _ping(client_app, **options):
    result = client_app.send_task(PING, ignore_result=False, **options)
    return result.get(timeout=20, interval=0.01, disable_sync_subtasks=False)


def test_api_producer_reaches_the_worker(app, celery_worker):
    from api.state import state

    assert _ping(state(app).celery) == {"pong": True}


@pytest.mark.skipif(
    not BROKER_URL.startswith("redis"), reason="a separate process needs a real broker"
)
def test_celery_cli_worker_process(app, tmp_path):
    """``celery -A worker worker`` is a working entry point (as in production)."""
    from api.state import state

    queue = f"ping-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "-Q",
            queue,
            "-c",
            "1",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        assert _ping(state(app).celery, queue=queue) == {"pong": True}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
