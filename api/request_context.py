"""The request id and the ids a request is about, for its log lines (models/logs.py).

A client may send ``X-Request-ID`` (kept if it is a plain token of up to 128 characters, else
replaced); every response carries the one used, and a turn the request accepts carries it into
the worker's lines for that turn.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from models import logs

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id() -> str | None:
    return g.get("request_id")


def init_request_context(app: Flask) -> None:
    """Call before init_auth (the request id is bound first, so a refusal's lines have it);
    ``bind_user_and_ids`` is registered by init_request_ids after init_auth."""

    @app.before_request
    def bind_request_id() -> None:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        logs.clear()  # a pooled thread's previous request left nothing behind
        logs.bind(request_id=g.request_id)

    @app.teardown_request
    def unbind(_exc: BaseException | None = None) -> None:
        logs.clear()  # lines logged after the request, in this thread, are not about it

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response


def init_request_ids(app: Flask) -> None:
    """Call after init_auth: the user is known once the token is checked."""

    @app.before_request
    def bind_user_and_ids() -> None:
        ids = request.view_args or {}
        logs.bind(
            user_id=g.get("user_id"),
            session_id=ids.get("session_id"),
            turn_id=ids.get("turn_id"),
        )
