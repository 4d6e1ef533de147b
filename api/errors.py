"""One JSON error shape for every error: ``{status, code, message, errors?, ...details}``."""

from __future__ import annotations

import logging

import marshmallow as ma
from flask import Flask, request
from flask_smorest import Api, Blueprint
from werkzeug.exceptions import HTTPException, InternalServerError

from models.db import is_database_unavailable

from .broker import is_broker_unavailable
from .schemas.storable import Schema

log = logging.getLogger(__name__)

DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
VALIDATION_MESSAGE = "The request is invalid; see errors for each field."
# When a client should try again after a database or broker outage: the next request after the
# dependency is back succeeds (the pool replaces dead connections by itself), so retrying soon
# costs one quick 503 at most.
OUTAGE_RETRY_AFTER_SECONDS = "2"
OUTAGES = (
    (
        is_database_unavailable,
        "database_unavailable",
        "The database is unavailable; retry shortly.",
    ),
    (
        is_broker_unavailable,
        "broker_unavailable",
        "The task broker is unavailable; retry shortly.",
    ),
)


class ErrorSchema(Schema):
    status = ma.fields.Integer(metadata={"example": 404})
    code = ma.fields.String(metadata={"description": "Stable machine-readable error code."})
    message = ma.fields.String(metadata={"description": "Human-readable explanation."})
    errors = ma.fields.Dict(
        metadata={"description": "Field errors (422 only): field name -> list of messages."}
    )


def _flatten_webargs(messages: dict) -> dict:
    """webargs nests field errors under the request location; clients want field -> messages."""
    flat: dict = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            flat.update(fields)
        else:
            flat[location] = fields
    return flat


def error_payload(status: int, message: str, code: str | None = None, **extra) -> dict:
    return {
        "status": status,
        "code": code or DEFAULT_CODES.get(status, "error"),
        "message": message,
        **extra,
    }


class RoomcastApi(Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        data = dict(getattr(error, "data", None) or {})
        status = error.code or 500
        # Werkzeug's own headers of the error (405's Allow, 401's WWW-Authenticate...), then
        # those given to abort(); the body is ours, so its Content-Type is not kept.
        headers = {
            name: value for name, value in error.get_headers() if name.lower() != "content-type"
        }
        headers.update(data.pop("headers", None) or {})
        message = data.pop("message", None)
        errors = data.pop("errors", None)
        webargs_messages = data.pop("messages", None)
        for internal in ("exc", "schema"):
            data.pop(internal, None)
        if errors is None and webargs_messages is not None:
            errors = _flatten_webargs(webargs_messages)
            if status == 400:
                # Malformed JSON: webargs says so in its messages, not in a message.
                message = message or "; ".join(
                    str(m)
                    for msgs in errors.values()
                    for m in (msgs if isinstance(msgs, list) else [msgs])
                )
                errors = None
        if message is None:
            message = error.description or error.name
            if status == 422 and errors:
                message = VALIDATION_MESSAGE
        payload = error_payload(status, message, data.pop("code", None), **data)
        if errors is not None:
            payload["errors"] = errors
        return payload, status, headers


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def outage_response(error: BaseException) -> tuple[dict, int, dict] | None:
    """The 503 for an error that means a dependency is down (None for any other error).

    Nothing is half-written: a request writes in one transaction, committed last, and a
    transaction that meets the outage is rolled back (or never reaches the server). Only a
    commit whose answer is lost may have been applied; an Idempotency-Key makes its retry safe.
    """
    for is_outage, code, message in OUTAGES:
        if is_outage(error):
            log.warning(
                "%s: %s %s answered 503: %s",
                code,
                request.method,
                request.path,
                _first_line(error),
            )
            return (
                error_payload(503, message, code),
                503,
                {"Retry-After": OUTAGE_RETRY_AFTER_SECONDS},
            )
    return None


def register_error_handlers(app: Flask, api: RoomcastApi) -> None:
    """Unhandled exceptions become a logged 500 in the same shape (also in testing mode);
    a database or broker outage is a 503 with Retry-After."""

    @app.errorhandler(Exception)
    def unhandled(error: Exception):
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        if (response := outage_response(error)) is not None:
            return response
        log.exception("unhandled error on request")
        return api.handle_http_exception(InternalServerError())


def error_response(
    blp: Blueprint,
    status: int,
    description: str,
    examples: dict[str, str] | None = None,
    *,
    errors: dict | None = None,
):
    """Document an error outcome of a view (``@error_response(blp, 404, ...)``).

    The response is the one error shape, with an example per error ``code`` the view answers with
    (``examples`` maps each code to a sample message); ``errors`` is a sample of 422 field errors.
    """
    default_message = VALIDATION_MESSAGE if errors is not None else description
    payloads = {
        code: error_payload(status, message, code)
        for code, message in (examples or {DEFAULT_CODES[status]: default_message}).items()
    }
    if errors is not None:
        for payload in payloads.values():
            payload["errors"] = errors
    if len(payloads) == 1:
        (example,) = payloads.values()
        return blp.alt_response(
            status, schema=ErrorSchema, description=description, example=example
        )
    return blp.alt_response(
        status,
        schema=ErrorSchema,
        description=description,
        examples={code: {"summary": code, "value": payload} for code, payload in payloads.items()},
    )
