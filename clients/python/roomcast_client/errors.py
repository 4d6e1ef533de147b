"""The errors the client raises: one class per kind of answer, each with the API's error code.

The API answers every error with one JSON shape, ``{status, code, message, errors?, ...}``
(``errors``: field -> messages, on 422; any other key is a detail, such as ``active_turn_id``
on a 409 ``turn_active``).
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from .models import Turn


class RoomcastError(Exception):
    """The base of every error this client raises."""


class APIConnectionError(RoomcastError):
    """The server could not be reached, or the connection broke (after the retries)."""


class UnexpectedResponse(RoomcastError):
    """A success answer the client cannot read (not JSON, or not the expected shape)."""


class WaitTimeout(RoomcastError, TimeoutError):
    """``turns.wait`` gave up before the turn ended; ``turn`` is its last state."""

    def __init__(self, turn: Turn, seconds: float) -> None:
        super().__init__(f"turn {turn.id} still {turn.status} after {seconds:g} s")
        self.turn = turn


class APIError(RoomcastError):
    """An error answer of the API: its HTTP ``status``, ``code`` and ``message``.

    ``errors`` maps fields to messages (validation errors), ``details`` holds the body's other
    keys (``active_turn_id``, ``limit``...), ``headers`` the answer's headers.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        headers: httpx.Headers | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.errors: dict[str, Any] = errors or {}
        self.details: dict[str, Any] = details or {}
        self.headers = headers if headers is not None else httpx.Headers()
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.errors:
            text += " (" + "; ".join(f"{k}: {_joined(v)}" for k, v in self.errors.items()) + ")"
        return text


class ValidationError(APIError):
    """400 or 422: the request is malformed or invalid (``errors`` says which field)."""


class Unauthorized(APIError):
    """401: no token, a wrong or revoked token, or wrong credentials."""


class NotFound(APIError):
    """404: no such resource (or one of another user's, which looks the same)."""


class Conflict(APIError):
    """409: the state forbids it (``turn_active``, ``limit_reached``, ``email_taken``...)."""


class RateLimited(APIError):
    """429: too many requests; ``retry_after`` is the wait the server asked for (seconds)."""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers)


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: ValidationError,
    429: RateLimited,
}


def _joined(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def error_from_response(response: httpx.Response) -> APIError:
    """The error an answer stands for; a body that is not the API's (a proxy's page) still
    gives its status, with the code ``http_<status>``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    details = {k: v for k, v in body.items() if k not in ("status", "code", "message", "errors")}
    errors = body.get("errors")
    message = body.get("message")
    if not isinstance(message, str):
        message = response.reason_phrase or response.text[:200] or "error"
    return _BY_STATUS.get(status, APIError)(
        status,
        str(body.get("code") or f"http_{status}"),
        message,
        errors=errors if isinstance(errors, dict) else None,
        details=details,
        headers=response.headers,
        method=response.request.method,
        url=str(response.request.url),
    )


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds (it is a number of seconds or an HTTP date), None if absent."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
