"""Bearer-token authentication for every endpoint that is not marked public."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from flask import Flask, current_app, g, request
from flask_smorest import Blueprint, abort
from sqlalchemy import bindparam, select
from werkzeug.security import check_password_hash, generate_password_hash

from models import ApiToken, User, utcnow
from models.users import hash_token

from .state import autocommit_connection, get_db, state
from .token_cache import VerifiedToken

# Writing last_used_at on every request would turn each read into a write; once a minute is
# precise enough to spot unused tokens.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The metrics endpoint checks a token of its own (api/metrics.py); the console page and its
# assets are static documents whose script calls the API with the user's token.
PUBLIC_BLUEPRINTS = {"api-docs", "metrics", "console"}

_TOKENS = ApiToken.__table__
# Core statements built once: a token check needs four columns, not an ORM object.
_LIVE_TOKEN_BY_HASH = select(
    _TOKENS.c.id, _TOKENS.c.user_id, _TOKENS.c.expires_at, _TOKENS.c.last_used_at
).where(_TOKENS.c.token_hash == bindparam("token_hash"), _TOKENS.c.revoked_at.is_(None))
_TOUCH_TOKEN = (
    _TOKENS.update()
    .where(_TOKENS.c.id == bindparam("token_id"))
    .values(last_used_at=bindparam("now"))
)

# Issued tokens are a prefix and URL-safe base64 (models.users.new_token_secret); anything
# else cannot be one. Generous on length, so a longer token format stays accepted.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")

# Compared against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = generate_password_hash("roomcast-dummy-password")


def public(blp: Blueprint) -> Callable:
    """Mark a view method as needing no token (and document it so in OpenAPI)."""

    def decorator(func: Callable) -> Callable:
        func = blp.doc(security=[])(func)
        func.public = True
        return func

    return decorator


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # scrypt, salted


def authenticate_password(email: str, password: str) -> User | None:
    user = get_db().scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def current_user_id() -> int:
    return g.user_id


def _is_public_view(endpoint: str, method: str) -> bool:
    if endpoint.rpartition(".")[0] in PUBLIC_BLUEPRINTS:
        return True
    view = current_app.view_functions.get(endpoint)
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        view = getattr(view_class, method.lower(), None)
    return bool(getattr(view, "public", False))


def _unauthorized(message: str):
    abort(401, message=message, headers={"WWW-Authenticate": 'Bearer realm="roomcast"'})


def _verified_token(token_hash: str) -> VerifiedToken | None:
    """The live (not revoked) token with this hash: from the cache, else from the database."""
    cache = state().token_cache
    token = cache.get(token_hash)
    if token is None:
        with autocommit_connection() as conn:
            row = conn.execute(_LIVE_TOKEN_BY_HASH, {"token_hash": token_hash}).first()
        if row is None:
            return None
        token = VerifiedToken(
            token_id=row.id,
            user_id=row.user_id,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
        )
        cache.put(token_hash, token)
    return token


def _authenticate(is_public: Callable[[str, str], bool]) -> None:
    if request.endpoint is None or request.method == "OPTIONS":
        return  # unknown routes fall through to 404/405
    if is_public(request.endpoint, request.method):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if not header:
        _unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        _unauthorized("Malformed Authorization header: expected 'Bearer <token>'.")
    if not _TOKEN_SHAPE.fullmatch(secret):
        # Not a token this server could have issued (control characters, non-ASCII, lone
        # surrogates, megabytes): refused before it is hashed or looked up.
        _unauthorized("Invalid or revoked token.")
    token = _verified_token(hash_token(secret))
    if token is None:
        _unauthorized("Invalid or revoked token.")
    now = utcnow()
    # Checked on every request, cached or not: the cache must not outlive a token.
    if token.expires_at is not None and token.expires_at <= now:
        _unauthorized("Token expired.")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        # Set on the cached entry first, so the process's other requests skip the write.
        token.last_used_at = now
        with autocommit_connection() as conn:
            conn.execute(_TOUCH_TOKEN, {"token_id": token.token_id, "now": now})
    g.user_id = token.user_id
    g.token_id = token.token_id


def init_auth(app: Flask) -> None:
    # Whether a view is public cannot change once the app serves: decided once per view.
    public: dict[tuple[str, str], bool] = {}

    def is_public(endpoint: str, method: str) -> bool:
        key = (endpoint, method)
        if key not in public:
            public[key] = _is_public_view(endpoint, method)
        return public[key]

    def authenticate_request() -> None:
        _authenticate(is_public)

    app.before_request(authenticate_request)
