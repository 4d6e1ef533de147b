"""Single-process server for one machine: the API plus, on the embedded broker, a Celery worker.

``make run`` calls this. It is a gevent process, like the production API and workers: each
request, long-poll and turn is a greenlet, so a client waiting for a turn holds a socket, not a
thread, and turns overlap their LLM calls. With an external broker (CELERY_BROKER_URL=redis://...)
it serves only the API, and workers run as ``celery -A worker worker -P gevent``. In production
run the API under gunicorn (the Dockerfile's command), see docker-compose.yml.
"""

# Patched first, before anything imports socket, threading or psycopg (which picks a wait
# function that cooperates with greenlets only if select is patched when it is imported).
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402

from gevent.pool import Pool  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from api import create_app  # noqa: E402
from models.heap import freeze_startup_objects  # noqa: E402
from models.settings import Settings  # noqa: E402

log = logging.getLogger("roomcast.serve")

# Connections served at once (each a greenlet; a long-poll is one of them): as gunicorn's
# --worker-connections in the Dockerfile. Beyond this, new connections wait to be accepted.
MAX_CONNECTIONS = 2000


class NoDelayWSGIServer(WSGIServer):
    """gevent's WSGI server with Nagle's algorithm off on each connection.

    It sends a response's headers and body in separate writes: with Nagle on, the body waited
    for the client's delayed ACK, 40 ms, on every response with a body (a turn's POST and its
    long-poll: 92 ms a turn where 11 was expected).
    """

    def handle(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle(sock, address)


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
        from worker.embedded import start_embedded_worker, start_maintenance_timer

        start_embedded_worker(
            celery_app,
            concurrency=settings.embedded_worker_concurrency,
            loglevel=settings.log_level,
        )
        log.info(
            "embedded Celery worker started (in-memory broker, %d turns at once)",
            settings.embedded_worker_concurrency,
        )
        # No beat in this mode: the sweeps and the reaper run on a timer of their own.
        start_maintenance_timer(celery_app, settings.broker_url)
        log.info("embedded maintenance (outbox sweep, reaper, webhook sweep) every second")
    else:
        log.info(
            "external broker %s: start workers with 'celery -A worker worker -P gevent'",
            settings.broker_url.split("@")[-1],
        )
    server = NoDelayWSGIServer((args.host, args.port), app, spawn=Pool(MAX_CONNECTIONS))
    freeze_startup_objects()  # models/heap.py
    log.info("serving on http://%s:%d", args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
