"""The REST API: a Flask app factory with one flask-smorest blueprint per resource."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from models.cooperative import (
    gevent_patched,
    probe_sockets_directly,
    require_cooperative_psycopg,
)
from models.db import make_engine, make_sessionmaker
from models.logs import configure_logging
from models.settings import Settings
from models.webhook_dispatch import send_after_commit

from .auth import init_auth
from .broker import make_celery_client
from .console import blp as console_blp
from .errors import RoomcastApi, register_error_handlers
from .limits import init_limits
from .metrics import init_metrics
from .request_context import init_request_context, init_request_ids
from .resources import (
    agents,
    auth,
    events,
    files,
    health,
    messages,
    providers,
    room_agents,
    rooms,
    sessions,
    turns,
    usage,
)
from .routing import BoundedIntConverter
from .state import AppState, close_db
from .token_cache import TokenCache

log = logging.getLogger(__name__)

BLUEPRINTS = (
    health.blp,
    auth.blp,
    agents.blp,
    providers.blp,
    rooms.blp,
    room_agents.blp,
    sessions.blp,
    turns.blp,
    messages.blp,
    events.blp,
    files.blp,
    usage.blp,
)


def create_app(
    settings: Settings | None = None, test_config: dict[str, Any] | None = None
) -> Flask:
    """Build the API. Settings come from the environment unless given (tests pass their own)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)

    if gevent_patched():  # gunicorn -k gevent, serve.py: greenlets must not block the process
        log.info("gevent-patched API process; psycopg waits with %s", require_cooperative_psycopg())
        probe_sockets_directly()

    app = Flask(__name__)
    # <int:...> URL parts beyond 64 bits cannot be ids: no route matches them (404), rather than
    # the database rejecting the number (500).
    app.url_map.converters["int"] = BoundedIntConverter
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Roomcast",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1/docs",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "info": {"description": "Multi-agent LLM chat over a task queue."},
        },
    )
    if test_config:
        app.config.update(test_config)

    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    app_state = app.extensions["roomcast"] = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        celery=make_celery_client(settings),
        token_cache=TokenCache(settings.token_cache_seconds),
    )
    # A turn the API ends (a cancel, a deleted session, an operator's `turns fail`) has its
    # webhook sent once the ending commits.
    send_after_commit(app_state.sessionmaker, lambda: app_state.celery)
    app.teardown_appcontext(close_db)
    # First of the request hooks: its timer covers authentication and rate limiting too.
    init_metrics(app, settings)

    api = RoomcastApi(app)
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    # A plain Flask blueprint: the page is not part of the OpenAPI document.
    app.register_blueprint(console_blp)
    register_error_handlers(app, api)
    init_request_context(app)
    init_auth(app)
    init_request_ids(app)
    # After init_auth: limits count per user, known once the token is checked.
    init_limits(app, settings)

    from .admin_cli import turns_cli
    from .cli import users_cli

    app.cli.add_command(users_cli)
    app.cli.add_command(turns_cli)
    return app
