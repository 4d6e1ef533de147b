"""Prometheus metrics of the API: requests by route and status with their latency, and the
scrape endpoint ``GET /metrics`` (models/metrics.py has the metrics and the queue's state).

``/metrics`` is not public: it answers only with ``Authorization: Bearer $ROOMCAST_METRICS_TOKEN``
and is a 404 while that setting is unset. It is outside the OpenAPI document (not a client API).
"""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, Flask, Response, g, request
from flask_smorest import abort

from models.metrics import HTTP_REQUESTS, HTTP_SECONDS, scrape
from models.settings import Settings

from .state import state

blp = Blueprint("metrics", __name__)
# A route outside the app's rules (a 404 before any view) is counted under one label, so
# scanners cannot grow the label set without bound.
UNMATCHED_ROUTE = "<unmatched>"


@blp.get("/metrics")
def metrics() -> Response:
    token = state().settings.metrics_token
    if not token:
        abort(404, message="Metrics are off: set ROOMCAST_METRICS_TOKEN to serve them.")
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(secret.strip(), token):
        abort(
            401,
            message="Send 'Authorization: Bearer <ROOMCAST_METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": 'Bearer realm="roomcast-metrics"'},
        )
    body, content_type = scrape(state().sessionmaker)
    return Response(body, content_type=content_type)


def init_metrics(app: Flask, settings: Settings) -> None:
    app.register_blueprint(blp)

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE
            HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
            HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response
