"""The yardstick for polling: a plain Flask app answering one primary-key read as JSON.

Same database, same engine settings (``models.db.make_engine``) and, in the benchmark, the same
gunicorn settings as the API, but no authentication, no ownership check, no schema and no ETag::

    DATABASE_URL=... gunicorn -k gevent -w 2 --reuse-port 'bench.pk_app:create_app()'
    DATABASE_URL=sqlite:///var/bench/embedded.db python -m bench.pk_app --port 8101

``GET /turns/<id>`` reads one turn row; ``GET /hello`` answers without touching the database.
"""

from __future__ import annotations

import argparse
import os

from flask import Flask, abort
from sqlalchemy import text

from models.db import make_engine


def create_app() -> Flask:
    app = Flask(__name__)
    engine = make_engine(os.environ["DATABASE_URL"], pool_size=10)
    query = text("SELECT id, session_id, status, updated_at FROM turns WHERE id = :id")

    @app.get("/hello")
    def hello():
        return {"hello": "world"}

    @app.get("/turns/<int:turn_id>")
    def turn(turn_id: int):
        with engine.connect() as conn:
            row = conn.execute(query, {"id": turn_id}).mappings().first()
        if row is None:
            abort(404)
        return dict(row)

    return app


def main() -> None:
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(
        description="Serve the PK-read yardstick (threaded dev server)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    run_simple(args.host, args.port, create_app(), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
