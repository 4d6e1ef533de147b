"""Configuration read once from environment variables, shared by the API and the worker.

Every setting has a documented default (see README "Configuration"). A malformed value, or a
``ROOMCAST_*`` variable this module does not know (usually a typo), stops the process at start-up
with a message naming the variable, rather than running with a silently ignored setting.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .logs import LOG_FORMATS
from .providers import ProviderConfig, load_catalog
from .webhook_urls import AllowedHosts, parse_allowed_hosts

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_BROKER_URL = "memory://localhost/"
SUPPORTED_BROKER_SCHEMES = {"memory", "redis", "rediss"}
SUPPORTED_DATABASE_BACKENDS = {"sqlite", "postgresql"}
BUDGET_PERIODS = ("day", "month")
RATE_LIMIT_OFF = {"off", "0", "none", "false", "no"}
# A revoked token may stay usable this long in other API processes: keep the bound short.
MAX_TOKEN_CACHE_SECONDS = 300
# Without ROOMCAST_SECRET_KEY, one random key for the whole process: the API and the embedded
# worker of `make run` share it (it also decrypts the webhook secrets the API stored).
_PROCESS_SECRET_KEY = secrets.token_hex(32)


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / 'var' / 'roomcast.db'}"


def _default_files_dir() -> str:
    return str(Path.cwd() / "var" / "files")


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false, 1/0, yes/no, on/off), got {raw!r}")


def _parse_int(name: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _parse_seconds(name: str, raw: str, *, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= maximum:  # also rejects nan
        raise ConfigError(f"{name} must be between 0 and {maximum:g}, got {raw!r}")
    return value


def _parse_decimal(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a non-negative number, got {raw!r}")
    return value


def _parse_rate_limit(name: str, raw: str) -> str | None:
    """A rate limit in the ``limits`` notation (``600/minute``, ``20/minute;200/hour``), or
    None for ``off`` (also ``0``, ``none``, ``false``)."""
    value = raw.strip()
    if value.lower() in RATE_LIMIT_OFF:
        return None
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise ConfigError(
            f"{name} must be a rate limit such as '600/minute' or '20/minute;200/hour'"
            f" (or 'off'), got {raw!r}"
        )
    return value


def _check_redis_or_memory_url(name: str, url: str) -> str:
    if urlsplit(url).scheme not in SUPPORTED_BROKER_SCHEMES:
        raise ConfigError(f"{name} must be memory:// or a redis:// URL, got {url!r}")
    return url


def _check_database_url(name: str, url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{name} is not a database URL: {url!r}") from None
    if parsed.get_backend_name() not in SUPPORTED_DATABASE_BACKENDS:
        raise ConfigError(
            f"{name} must point at SQLite or PostgreSQL, got backend {parsed.get_backend_name()!r}"
        )
    return url


def _check_broker_url(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_BROKER_SCHEMES:
        raise ConfigError(f"{name} must be memory:// (embedded) or a redis:// URL, got {url!r}")
    return url


@dataclass(frozen=True)
class Settings:
    """Every knob the service has. Build it with :meth:`from_env`."""

    database_url: str
    # The worker's database URL. Precedence: ROOMCAST_WORKER_DATABASE_URL, then DATABASE_URL,
    # then the default SQLite file, so one DATABASE_URL configures both sides.
    worker_database_url: str
    broker_url: str = EMBEDDED_BROKER_URL
    result_backend: str | None = None
    secret_key: str = field(default=_PROCESS_SECRET_KEY, repr=False)
    registration_enabled: bool = True
    max_upload_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    # Where uploaded files' bytes live, named by their SHA-256 (default: var/files under the
    # working directory, next to the default SQLite file).
    files_dir: str = field(default_factory=_default_files_dir)
    # The total size of one user's files (0: unlimited).
    user_storage_bytes: int = 100 * 1024 * 1024
    token_ttl_days: int = 0  # 0: tokens do not expire until revoked
    # How long an API process trusts a token it verified without reading it again (0: never);
    # bounds how long another process's revocation takes to reach it.
    token_cache_seconds: float = 2.0
    db_pool_size: int = 10
    # Turns the embedded worker (serve.py) runs at once: greenlets, each mostly waiting on an
    # LLM call; the test suite's in-process worker (threads) asks for 4.
    embedded_worker_concurrency: int = 200
    log_level: str = "INFO"
    # Log lines: "json" (one object a line, for log collectors) or "text" (development).
    log_format: str = "json"
    # GET /metrics answers only with this bearer token (None: metrics are not served).
    metrics_token: str | None = None
    # A worker serves its metrics on this port of metrics_address (None: not served).
    worker_metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    providers_file: str | None = None
    # How long a worker owns a claimed turn without renewing (it renews at every step).
    turn_lease_seconds: int = 20
    # Token budget for the history an agent sees (newest kept).
    context_tokens: int = 4000
    # Per-user spending limits per budget period (None: unlimited); a user's own settings
    # ({"budget": {"tokens": N, "cost": "1.50", "period": "day"}}) override them.
    budget_tokens: int | None = None
    budget_cost: Decimal | None = None
    budget_period: str = "month"
    default_provider: str = "local"
    # Tool rounds one agent may take per turn before it must answer.
    max_tool_rounds: int = 4
    # Rate limits (README "Limits"), in the `limits` notation; None: off. Requests of a user
    # (by token) and anonymous requests (by client address) each share one budget across the API.
    rate_limit: str | None = "600/minute"
    anonymous_rate_limit: str | None = "120/minute"
    # Per client address, for each of POST /auth/register and POST /auth/tokens.
    auth_rate_limit: str | None = "20/minute;200/hour"
    # Where the counters live: None means the broker's Redis, or memory with the embedded broker.
    ratelimit_storage_url: str | None = None
    # After this many failed logins for one email within the window (0: never), that email is
    # refused for login_backoff_seconds, doubling with every further failure up to the maximum.
    login_backoff_failures: int = 5
    login_backoff_window_seconds: int = 3600
    login_backoff_seconds: int = 30
    login_backoff_max_seconds: int = 900
    # How many proxies in front of the API set X-Forwarded-For (0: use the peer's address).
    trusted_proxies: int = 0
    # The most live rows of each kind one user may have (0: unlimited).
    max_agents_per_user: int = 1000
    max_rooms_per_user: int = 1000
    max_sessions_per_user: int = 100_000
    max_files_per_user: int = 10_000
    # Event streams (GET .../events): a comment line this often keeps proxies from closing an
    # idle stream (and finds clients gone); a stream open this long is closed, and the client
    # reconnects with Last-Event-ID.
    sse_heartbeat_seconds: float = 15.0
    sse_max_seconds: float = 300.0
    # Webhooks (README "Webhooks"): hosts a webhook may name although they are private or
    # loopback addresses (host or host:port entries, see parse_allowed_hosts); the timeout of
    # one delivery; the first retry's delay (doubling, at most an hour, see the delivery) and
    # how long after the turn's end a failing delivery is still retried.
    webhook_allowed_hosts: AllowedHosts = frozenset()
    webhook_timeout_seconds: float = 10.0
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_window_seconds: float = 86400.0

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def ratelimit_storage(self) -> str:
        """The rate limiter's storage: the setting, else the broker's Redis, else memory."""
        if self.ratelimit_storage_url:
            return self.ratelimit_storage_url
        return "memory://" if self.embedded_broker else self.broker_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ConfigError on bad input."""
        env = os.environ if environ is None else environ
        unknown = sorted(k for k in env if k.startswith("ROOMCAST_") and k not in _KNOWN_PREFIXED)
        if unknown:
            known = ", ".join(sorted(_KNOWN_PREFIXED))
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {known}")

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        database_url = _check_database_url(
            "DATABASE_URL", get("DATABASE_URL") or _default_database_url()
        )
        worker_database_url = _check_database_url(
            "ROOMCAST_WORKER_DATABASE_URL", get("ROOMCAST_WORKER_DATABASE_URL") or database_url
        )
        broker_url = _check_broker_url(
            "CELERY_BROKER_URL", get("CELERY_BROKER_URL") or EMBEDDED_BROKER_URL
        )
        kwargs: dict = {}
        if (value := get("CELERY_RESULT_BACKEND")) is not None:
            kwargs["result_backend"] = value
        if (value := get("ROOMCAST_SECRET_KEY")) is not None:
            if len(value) < 16:
                raise ConfigError("ROOMCAST_SECRET_KEY must be at least 16 characters long")
            kwargs["secret_key"] = value
        if (value := get("ROOMCAST_REGISTRATION_ENABLED")) is not None:
            kwargs["registration_enabled"] = _parse_bool("ROOMCAST_REGISTRATION_ENABLED", value)
        int_settings = {
            "ROOMCAST_MAX_UPLOAD_BYTES": ("max_upload_bytes", 1, None),
            "ROOMCAST_MAX_REQUEST_BYTES": ("max_request_bytes", 1024, None),
            "ROOMCAST_TOKEN_TTL_DAYS": ("token_ttl_days", 0, 3650),
            "ROOMCAST_DB_POOL_SIZE": ("db_pool_size", 1, 200),
            "ROOMCAST_EMBEDDED_WORKER_CONCURRENCY": ("embedded_worker_concurrency", 1, 2000),
            "ROOMCAST_TURN_LEASE_SECONDS": ("turn_lease_seconds", 2, 3600),
            "ROOMCAST_CONTEXT_TOKENS": ("context_tokens", 256, 1_000_000),
            "ROOMCAST_USER_STORAGE_BYTES": ("user_storage_bytes", 0, None),
            "ROOMCAST_MAX_TOOL_ROUNDS": ("max_tool_rounds", 0, 20),
            "ROOMCAST_LOGIN_BACKOFF_FAILURES": ("login_backoff_failures", 0, 1000),
            "ROOMCAST_LOGIN_BACKOFF_WINDOW_SECONDS": ("login_backoff_window_seconds", 1, 86400),
            "ROOMCAST_LOGIN_BACKOFF_SECONDS": ("login_backoff_seconds", 1, 86400),
            "ROOMCAST_LOGIN_BACKOFF_MAX_SECONDS": ("login_backoff_max_seconds", 1, 86400),
            "ROOMCAST_TRUSTED_PROXIES": ("trusted_proxies", 0, 10),
            "ROOMCAST_MAX_AGENTS_PER_USER": ("max_agents_per_user", 0, None),
            "ROOMCAST_MAX_ROOMS_PER_USER": ("max_rooms_per_user", 0, None),
            "ROOMCAST_MAX_SESSIONS_PER_USER": ("max_sessions_per_user", 0, None),
            "ROOMCAST_MAX_FILES_PER_USER": ("max_files_per_user", 0, None),
        }
        for name, (attr, minimum, maximum) in int_settings.items():
            if (value := get(name)) is not None:
                kwargs[attr] = _parse_int(name, value, minimum=minimum, maximum=maximum)
        rate_limits = {
            "ROOMCAST_RATE_LIMIT": "rate_limit",
            "ROOMCAST_ANONYMOUS_RATE_LIMIT": "anonymous_rate_limit",
            "ROOMCAST_AUTH_RATE_LIMIT": "auth_rate_limit",
        }
        for name, attr in rate_limits.items():
            if (value := get(name)) is not None:
                kwargs[attr] = _parse_rate_limit(name, value)
        if (value := get("ROOMCAST_RATELIMIT_STORAGE_URL")) is not None:
            kwargs["ratelimit_storage_url"] = _check_redis_or_memory_url(
                "ROOMCAST_RATELIMIT_STORAGE_URL", value.strip()
            )
        if (value := get("ROOMCAST_TOKEN_CACHE_SECONDS")) is not None:
            kwargs["token_cache_seconds"] = _parse_seconds(
                "ROOMCAST_TOKEN_CACHE_SECONDS", value, maximum=MAX_TOKEN_CACHE_SECONDS
            )
        if value := (get("ROOMCAST_METRICS_TOKEN") or "").strip():
            kwargs["metrics_token"] = value
        if (value := get("ROOMCAST_WORKER_METRICS_PORT")) is not None:
            kwargs["worker_metrics_port"] = _parse_int(
                "ROOMCAST_WORKER_METRICS_PORT", value, minimum=1, maximum=65535
            )
        if value := (get("ROOMCAST_METRICS_ADDRESS") or "").strip():
            kwargs["metrics_address"] = value
        if (value := get("ROOMCAST_LOG_FORMAT")) is not None:
            if value.strip().lower() not in LOG_FORMATS:
                raise ConfigError(f"ROOMCAST_LOG_FORMAT must be json or text, got {value!r}")
            kwargs["log_format"] = value.strip().lower()
        if (value := get("ROOMCAST_WEBHOOK_ALLOWED_HOSTS")) is not None:
            kwargs["webhook_allowed_hosts"] = parse_allowed_hosts(
                "ROOMCAST_WEBHOOK_ALLOWED_HOSTS", value
            )
        for name, attr, maximum in (
            ("ROOMCAST_SSE_HEARTBEAT_SECONDS", "sse_heartbeat_seconds", 300),
            ("ROOMCAST_SSE_MAX_SECONDS", "sse_max_seconds", 86400),
            ("ROOMCAST_WEBHOOK_TIMEOUT_SECONDS", "webhook_timeout_seconds", 30),
            ("ROOMCAST_WEBHOOK_RETRY_BASE_SECONDS", "webhook_retry_base_seconds", 3600),
            ("ROOMCAST_WEBHOOK_RETRY_WINDOW_SECONDS", "webhook_retry_window_seconds", 7 * 86400),
        ):
            if (value := get(name)) is not None:
                kwargs[attr] = _parse_seconds(name, value, maximum=maximum)
                if kwargs[attr] <= 0:
                    raise ConfigError(f"{name} must be more than 0, got {value!r}")
        if (value := get("ROOMCAST_LOG_LEVEL")) is not None:
            level = value.strip().upper()
            if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                raise ConfigError(
                    f"ROOMCAST_LOG_LEVEL must be DEBUG/INFO/WARNING/ERROR, got {value!r}"
                )
            kwargs["log_level"] = level
        if (value := get("ROOMCAST_BUDGET_TOKENS")) is not None:
            kwargs["budget_tokens"] = _parse_int("ROOMCAST_BUDGET_TOKENS", value, minimum=0)
        if (value := get("ROOMCAST_BUDGET_COST")) is not None:
            kwargs["budget_cost"] = _parse_decimal("ROOMCAST_BUDGET_COST", value)
        if (value := get("ROOMCAST_BUDGET_PERIOD")) is not None:
            if value.strip().lower() not in BUDGET_PERIODS:
                raise ConfigError(
                    f"ROOMCAST_BUDGET_PERIOD must be one of {BUDGET_PERIODS}, got {value!r}"
                )
            kwargs["budget_period"] = value.strip().lower()
        if (value := get("ROOMCAST_FILES_DIR")) is not None:
            kwargs["files_dir"] = str(Path(value).expanduser().absolute())
        if (value := get("ROOMCAST_PROVIDERS_FILE")) is not None:
            kwargs["providers_file"] = value
        if (value := get("ROOMCAST_DEFAULT_PROVIDER")) is not None:
            kwargs["default_provider"] = value.strip()
        settings = cls(
            database_url=database_url,
            worker_database_url=worker_database_url,
            broker_url=broker_url,
            **kwargs,
        )
        if settings.default_provider not in settings.providers():
            raise ConfigError(
                f"ROOMCAST_DEFAULT_PROVIDER {settings.default_provider!r} is not a known provider"
                f" (known: {', '.join(sorted(settings.providers()))})"
            )
        return settings

    def providers(self) -> dict[str, ProviderConfig]:
        """The provider catalog: built-ins plus ROOMCAST_PROVIDERS_FILE (loaded once)."""
        return load_catalog(self.providers_file)


_KNOWN_PREFIXED = frozenset(
    {
        "ROOMCAST_WORKER_DATABASE_URL",
        "ROOMCAST_SECRET_KEY",
        "ROOMCAST_REGISTRATION_ENABLED",
        "ROOMCAST_MAX_UPLOAD_BYTES",
        "ROOMCAST_MAX_REQUEST_BYTES",
        "ROOMCAST_TOKEN_TTL_DAYS",
        "ROOMCAST_TOKEN_CACHE_SECONDS",
        "ROOMCAST_DB_POOL_SIZE",
        "ROOMCAST_EMBEDDED_WORKER_CONCURRENCY",
        "ROOMCAST_LOG_LEVEL",
        "ROOMCAST_LOG_FORMAT",
        "ROOMCAST_METRICS_TOKEN",
        "ROOMCAST_WORKER_METRICS_PORT",
        "ROOMCAST_METRICS_ADDRESS",
        "ROOMCAST_PROVIDERS_FILE",
        # Read by worker/local_server.py: where the host's local model server is found.
        "ROOMCAST_RUNTIME_DIR",
        "ROOMCAST_TURN_LEASE_SECONDS",
        "ROOMCAST_CONTEXT_TOKENS",
        "ROOMCAST_BUDGET_TOKENS",
        "ROOMCAST_BUDGET_COST",
        "ROOMCAST_BUDGET_PERIOD",
        "ROOMCAST_DEFAULT_PROVIDER",
        "ROOMCAST_FILES_DIR",
        "ROOMCAST_USER_STORAGE_BYTES",
        "ROOMCAST_MAX_TOOL_ROUNDS",
        "ROOMCAST_RATE_LIMIT",
        "ROOMCAST_ANONYMOUS_RATE_LIMIT",
        "ROOMCAST_AUTH_RATE_LIMIT",
        "ROOMCAST_RATELIMIT_STORAGE_URL",
        "ROOMCAST_LOGIN_BACKOFF_FAILURES",
        "ROOMCAST_LOGIN_BACKOFF_WINDOW_SECONDS",
        "ROOMCAST_LOGIN_BACKOFF_SECONDS",
        "ROOMCAST_LOGIN_BACKOFF_MAX_SECONDS",
        "ROOMCAST_TRUSTED_PROXIES",
        "ROOMCAST_MAX_AGENTS_PER_USER",
        "ROOMCAST_MAX_ROOMS_PER_USER",
        "ROOMCAST_MAX_SESSIONS_PER_USER",
        "ROOMCAST_MAX_FILES_PER_USER",
        "ROOMCAST_SSE_HEARTBEAT_SECONDS",
        "ROOMCAST_SSE_MAX_SECONDS",
        "ROOMCAST_WEBHOOK_ALLOWED_HOSTS",
        "ROOMCAST_WEBHOOK_TIMEOUT_SECONDS",
        "ROOMCAST_WEBHOOK_RETRY_BASE_SECONDS",
        "ROOMCAST_WEBHOOK_RETRY_WINDOW_SECONDS",
    }
)

__all__ = ["ConfigError", "Settings", "EMBEDDED_BROKER_URL", "PROJECT_ROOT"]
