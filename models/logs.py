"""Log lines of the API and the workers: JSON on stdout (one object a line), or plain text in
development (ROOMCAST_LOG_FORMAT=text), each with the ids of what it is about.

The ids (request_id, user_id, session_id, turn_id) live in a context variable: the API binds them
for a request, the worker for a turn's task (the request id travels in the task's headers), and
every line logged meanwhile carries them. Context variables are per thread and, under gevent,
per greenlet, so concurrent requests and turns never mix their ids.

Lines never carry message contents at INFO, passwords or token secrets; as a last guard, anything
shaped like an API token or a webhook secret is masked in every line. httpx logs each request's
whole URL at INFO (a webhook's may carry its receiver's credentials): it logs from WARNING up.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
CONTEXT_KEYS = ("request_id", "user_id", "session_id", "turn_id")
# API tokens are "rc_" and 43 URL-safe characters (models.users.new_token_secret); webhook
# secrets "whsec_" and base64 (models.webhook_secrets.new_secret).
_TOKEN = re.compile(r"rc_[A-Za-z0-9_-]{16,}")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{16,}")

# Never mutated: bind() sets a new mapping, so a context copied into a thread or greenlet keeps
# its own ids.
_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "roomcast_log_context", default=MappingProxyType({})
)


def bind(**ids: Any) -> Token:
    """Add ids to the current context (None values are left out); returns the token to reset."""
    return _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


def reset(token: Token) -> None:
    _context.reset(token)


def clear() -> None:
    _context.set({})


def current() -> dict[str, Any]:
    return dict(_context.get())


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        reset(token)


class ContextFilter(logging.Filter):
    """Puts the context's ids on each record (a handler filter: every logger's lines get them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _Masking:
    def format(self, record: logging.LogRecord) -> str:
        return _WEBHOOK_SECRET.sub("whsec_***", _TOKEN.sub("rc_***", super().format(record)))


class JsonLines(_Masking, JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )


class PlainText(_Masking, logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_KEYS if hasattr(record, k))
        return f"{line} [{ids}]" if ids else line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """One handler on the root logger, writing to stdout; replaces what was there."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines() if fmt == "json" else PlainText())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "roomcast", False):
            root.removeHandler(old)
    handler.roomcast = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(max(logging.getLevelName(level), logging.WARNING))
