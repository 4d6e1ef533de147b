"""Rate limits (the ``limits`` library) and the login backoff; README "Limits" tells clients.

- Each user (by token) has one budget of requests across the API (ROOMCAST_RATE_LIMIT), and so
  has each client address for requests without a token (ROOMCAST_ANONYMOUS_RATE_LIMIT).
- POST /auth/register and POST /auth/tokens have a tighter budget of their own per client
  address (ROOMCAST_AUTH_RATE_LIMIT): each one costs a deliberately slow password hash.
- Failed logins are counted per email, whatever the address they come from: past
  ROOMCAST_LOGIN_BACKOFF_FAILURES, that email is refused for a time that doubles with every
  further failure; a successful login resets it.

Over a limit the answer is 429 with ``Retry-After`` (seconds) in the one JSON error shape. The
counters live in the limiter's storage: Redis in production, so every API process shares them;
memory in embedded mode (one process). Health checks, the OpenAPI documents and the console page
are not limited.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from flask import Flask, current_app, g, request
from flask_smorest import abort
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import RateLimiter, SlidingWindowCounterRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from models.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "roomcast"
# Load balancers probe health, Prometheus scrapes metrics, the documents (and the console's
# static page) are static: none is worth a client's budget.
UNLIMITED_BLUEPRINTS = frozenset({"health", "api-docs", "metrics", "console"})
# Its POSTs (register, token creation) each cost a deliberately slow password hash.
AUTH_BLUEPRINT = "auth"
# Strategy (SlidingWindowCounterRateLimiter): counts of the current and the previous window,
# weighted; close to a true sliding window (no double burst at a window's edge) for two counters
# per key.
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


class Counters:
    """A rate-limit strategy on the shared storage, or on this process's memory while the
    shared storage fails (an outage of Redis must not take the API down with it)."""

    RETRY_SHARED_AFTER_SECONDS = 5.0

    def __init__(self, storage_uri: str) -> None:
        options = REDIS_TIMEOUTS if storage_uri.startswith("redis") else {}
        self.storage = storage_from_string(storage_uri, **options)
        self._shared = SlidingWindowCounterRateLimiter(self.storage)
        self._local = (
            self._shared
            if isinstance(self.storage, MemoryStorage)
            else SlidingWindowCounterRateLimiter(MemoryStorage())
        )
        self._shared_down_until = 0.0

    def hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, RateLimiter]:
        """Count one request; whether it is within ``item``, and the strategy that counted it."""
        if time.monotonic() >= self._shared_down_until:
            try:
                return self._shared.hit(item, *identifiers), self._shared
            except Exception as exc:
                self._shared_down_until = time.monotonic() + self.RETRY_SHARED_AFTER_SECONDS
                log.warning("rate limit storage unavailable, counting in memory: %s", exc)
        return self._local.hit(item, *identifiers), self._local


def _retry_after_for(strategy: RateLimiter, item: RateLimitItem, *identifiers: str) -> int:
    try:
        return _retry_after(strategy.get_window_stats(item, *identifiers).reset_time)
    except Exception:  # the storage went away between the count and this answer
        return 1


@dataclass
class Limits:
    counters: Counters
    login_backoff: LoginBackoff


def limits(app: Flask | None = None) -> Limits:
    return (app or current_app).extensions["roomcast_limits"]


def _parsed(limit: str | None) -> list[RateLimitItem]:
    return parse_many(limit) if limit else []


def init_limits(app: Flask, settings: Settings) -> None:
    """Rate-limit ``app``. Call after init_auth: the limiter counts per user, so it must run
    after the request's token is checked (a request refused 401 never reaches it).

    The ``limits`` library counts; this hook only picks the key and the limits. (Flask-Limiter,
    used before, spent as much time again resolving which limits apply to each request.)
    """
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)

    counters = Counters(settings.ratelimit_storage)
    user_limits = _parsed(settings.rate_limit)
    anonymous_limits = _parsed(settings.anonymous_rate_limit)
    auth_limits = _parsed(settings.auth_rate_limit)
    app.extensions["roomcast_limits"] = Limits(
        counters=counters,
        login_backoff=LoginBackoff(
            storage=counters.storage,
            failures=settings.login_backoff_failures,
            window_seconds=settings.login_backoff_window_seconds,
            base_seconds=settings.login_backoff_seconds,
            max_seconds=settings.login_backoff_max_seconds,
        ),
    )

    def check(items: list[RateLimitItem], scope: str, key: str) -> None:
        for item in items:
            allowed, strategy = counters.hit(item, KEY_PREFIX, scope, key)
            if not allowed:
                retry_after = _retry_after_for(strategy, item, KEY_PREFIX, scope, key)
                abort(
                    429,
                    code="rate_limited",
                    message=f"Too many requests: the limit is {item}. Retry in {retry_after} s.",
                    retry_after=retry_after,
                    headers={"Retry-After": str(retry_after)},
                )

    @app.before_request
    def limit_request() -> None:
        # No route (a 404), health checks and the documents: not counted.
        if request.endpoint is None or request.blueprint in UNLIMITED_BLUEPRINTS:
            return
        if request.blueprint == AUTH_BLUEPRINT and request.method == "POST":
            # A budget per operation: registering does not use up logging in.
            check(auth_limits, request.endpoint, _address_key())
        if g.get("user_id") is not None:
            check(user_limits, "api", _client_key())
        else:
            check(anonymous_limits, "api", _client_key())
