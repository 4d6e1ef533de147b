"""Single-process server for one machine: the API plus, on the embedded broker, a Celery worker.

``make run`` calls this. With an external broker (CELERY_BROKER_URL=redis://...) it serves only
the API, and workers run as ``celery -A worker worker``. In production prefer gunicorn
(``gunicorn 'api:create_app()'``), see docker-compose.yml.
"""

from __future__ import annotations

import argparse
import logging
import os

from werkzeug.serving import run_simple

from api import create_app
from models.settings import Settings

log = logging.getLogger("roomcast.serve")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()

    settings = Settings.from_env()
    app = create_app(settings)
    if settings.embedded_broker:
        # Imported here: the worker reads the same environment, and only this mode needs it.
        from worker import app as celery_app
        from worker.embedded import start_embedded_worker

        start_embedded_worker(
            celery_app,
            concurrency=settings.embedded_worker_concurrency,
            loglevel=settings.log_level,
        )
        log.info("embedded Celery worker started (in-memory broker)")
    else:
        log.info(
            "external broker %s: start workers with 'celery -A worker worker'",
            settings.broker_url.split("@")[-1],
        )
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
