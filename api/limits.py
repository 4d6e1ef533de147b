"""Rate limits (Flask-Limiter) and the login backoff; README "Limits" explains them to clients.

- Each user (by token) has one budget of requests across the API (ROOMCAST_RATE_LIMIT), and so
  has each client address for requests without a token (ROOMCAST_ANONYMOUS_RATE_LIMIT).
- POST /auth/register and POST /auth/tokens have a tighter budget of their own per client
  address (ROOMCAST_AUTH_RATE_LIMIT): each one costs a deliberately slow password hash.
- Failed logins are counted per email, whatever the address they come from: past
  ROOMCAST_LOGIN_BACKOFF_FAILURES, that email is refused for a time that doubles with every
  further failure; a successful login resets it.

Over a limit the answer is 429 with ``Retry-After`` (seconds) in the one JSON error shape. The
counters live in the limiter's storage: Redis in production, so every API process shares them;
memory in embedded mode (one process). Health checks and the OpenAPI documents are not limited.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from flask import Flask, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from flask_smorest import Blueprint, abort
from limits.storage import Storage
from werkzeug.middleware.proxy_fix import ProxyFix

from models.settings import Settings

from .errors import RoomcastApi

log = logging.getLogger(__name__)

KEY_PREFIX = "roomcast"
# Load balancers probe these, and the documents are static: neither is worth a client's budget.
UNLIMITED_BLUEPRINTS = frozenset({"health", "api-docs"})
# Strategy: counts of the current and the previous window, weighted; close to a true sliding
# window (no double burst at a window's edge) for two counters per key.
STRATEGY = "sliding-window-counter"
# A Redis that does not answer must not hold requests: the limiter then counts in memory.
REDIS_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 1}


def client_address() -> str:
    """The client's address (the peer, or X-Forwarded-For behind ROOMCAST_TRUSTED_PROXIES)."""
    return request.remote_addr or "unknown"


def _address_key() -> str:
    return f"ip:{client_address()}"


def _client_key() -> str:
    """Authenticated requests count against their user, whatever address they come from."""
    user_id = g.get("user_id")
    return f"user:{user_id}" if user_id is not None else _address_key()


def _retry_after(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))


@dataclass
class LoginBackoff:
    """Failed logins per email, in the limiter's storage (shared by every API process)."""

    storage: Storage
    failures: int  # failures within the window before the first refusal (0: off)
    window_seconds: int
    base_seconds: int
    max_seconds: int

    @staticmethod
    def _keys(email: str) -> tuple[str, str]:
        # Hashed: the storage needs no readable email addresses.
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        return f"{KEY_PREFIX}/login-failures/{digest}", f"{KEY_PREFIX}/login-lock/{digest}"

    def refuse_if_locked(self, email: str) -> None:
        """429 with Retry-After while ``email`` is locked out; before any password is checked."""
        if not self.failures:
            return
        _, lock_key = self._keys(email)
        try:
            if not self.storage.get(lock_key):
                return
            retry_after = _retry_after(self.storage.get_expiry(lock_key))
        except Exception:
            log.warning("login backoff storage unavailable; not checked", exc_info=True)
            return
        abort(
            429,
            code="login_backoff",
            message=(
                "Too many failed logins for this account: try again in"
                f" {retry_after} s. Each further failure doubles the wait; a successful login"
                " resets it."
            ),
            retry_after=retry_after,
            headers={"Retry-After": str(retry_after)},
        )

    def record_failure(self, email: str) -> None:
        if not self.failures:
            return
        failures_key, lock_key = self._keys(email)
        try:
            count = self.storage.incr(failures_key, self.window_seconds)
            if count >= self.failures:
                # 1, 2, 4... times the base; the exponent is bounded so the number stays small.
                doublings = min(count - self.failures, 32)
                seconds = min(self.base_seconds * 2**doublings, self.max_seconds)
                self.storage.incr(lock_key, seconds)
                log.info("login locked for %s s after %s failures", seconds, count)
        except Exception:
            log.warning("login backoff storage unavailable; failure not counted", exc_info=True)

    def reset(self, email: str) -> None:
        if not self.failures:
            return
        try:
            for key in self._keys(email):
                self.storage.clear(key)
        except Exception:
            log.warning("login backoff storage unavailable; not reset", exc_info=True)


@dataclass
class Limits:
    limiter: Limiter
    login_backoff: LoginBackoff


def limits(app: Flask | None = None) -> Limits:
    return (app or current_app).extensions["roomcast_limits"]


def init_limits(app: Flask, api: RoomcastApi, settings: Settings, auth_blueprint: Blueprint):
    """Rate-limit ``app``. Call after init_auth: the limiter counts per user, so it must run
    after the request's token is checked (a request refused 401 never reaches it)."""
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)

    def general_limit() -> str:
        authenticated = g.get("user_id") is not None
        limit = settings.rate_limit if authenticated else settings.anonymous_rate_limit
        return limit or ""  # "": no limit

    storage_uri = settings.ratelimit_storage
    limiter = Limiter(
        key_func=_client_key,
        application_limits=[ApplicationLimit(general_limit)],
        storage_uri=storage_uri,
        storage_options=REDIS_TIMEOUTS if storage_uri.startswith("redis") else {},
        strategy=STRATEGY,
        key_prefix=KEY_PREFIX,
        # Storage trouble is logged and counted in this process's memory meanwhile: an outage
        # of Redis must not take the API down with it.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.request_filter(lambda: request.blueprint in UNLIMITED_BLUEPRINTS)
    if settings.auth_rate_limit:
        limiter.limit(
            settings.auth_rate_limit,
            key_func=_address_key,
            methods=["POST"],
            override_defaults=False,
            scope="auth",
        )(auth_blueprint)
    limiter.init_app(app)
    app.extensions["roomcast_limits"] = Limits(
        limiter=limiter,
        login_backoff=LoginBackoff(
            storage=limiter.storage,
            failures=settings.login_backoff_failures,
            window_seconds=settings.login_backoff_window_seconds,
            base_seconds=settings.login_backoff_seconds,
            max_seconds=settings.login_backoff_max_seconds,
        ),
    )

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded):
        breached = limiter.current_limit
        try:
            # The window's own reset time (RequestLimit.reset_at adds a second to it).
            retry_after = _retry_after(breached.window.reset_time) if breached else 1
        except Exception:  # the storage went away between the count and this answer
            retry_after = 1
        error.data = {
            "code": "rate_limited",
            "message": (
                f"Too many requests: the limit is {error.limit.limit}. Retry in {retry_after} s."
            ),
            "retry_after": retry_after,
            "headers": {"Retry-After": str(retry_after)},
        }
        return api.handle_http_exception(error)

    return limiter
