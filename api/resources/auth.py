"""Registration, login (token issue), the current user, and token management."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import ApiToken, User, WebhookSecret, utcnow
from models.users import issue_token

from ..auth import authenticate_password, current_user_id, hash_password, public
from ..errors import error_response
from ..limits import limits
from ..ownership import get_owned_or_404
from ..pagination import CursorArgsSchema, page_schema, paginate
from ..schemas.auth import LoginSchema, NewTokenSchema, RegisterSchema, TokenSchema, UserSchema
from ..schemas.webhooks import NewWebhookSecretSchema, WebhookSecretSchema
from ..state import get_db, state
from ..webhook_secret import rotate

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and API tokens.")

AUTH_RATE_LIMITED = error_response(
    blp,
    429,
    "Too many requests from this address (ROOMCAST_AUTH_RATE_LIMIT); see Retry-After.",
    {"rate_limited": "Too many requests: the limit is 20 per 1 minute. Retry in 42 s."},
)


@blp.route("/register")
class Register(MethodView):
    @public(blp)
    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(403, description="Registration is disabled on this server.")
    @blp.alt_response(409, description="The email is already registered.")
    @AUTH_RATE_LIMITED
    def post(self, data):
        """Create an account"""
        if not state().settings.registration_enabled:
            abort(
                403,
                message="Registration is disabled on this server.",
                code="registration_disabled",
            )
        db = get_db()
        user = User(
            email=data["email"].strip().lower(), password_hash=hash_password(data["password"])
        )
        db.add(user)
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            abort(409, message="This email is already registered.", code="email_taken")
        return user


@blp.route("/tokens")
class Tokens(MethodView):
    @public(blp)
    @blp.arguments(LoginSchema)
    @blp.response(201, NewTokenSchema)
    @blp.alt_response(401, description="Wrong email or password.")
    @error_response(
        blp,
        429,
        "Too many requests from this address (ROOMCAST_AUTH_RATE_LIMIT), or too many failed"
        " logins for this email (ROOMCAST_LOGIN_BACKOFF_*); see Retry-After.",
        {
            "rate_limited": "Too many requests: the limit is 20 per 1 minute. Retry in 42 s.",
            "login_backoff": "Too many failed logins for this account: try again in 60 s."
            " Each further failure doubles the wait; a successful login resets it.",
        },
    )
    def post(self, data):
        """Log in: exchange email and password for a bearer token (shown once)

        After ROOMCAST_LOGIN_BACKOFF_FAILURES failed logins for one email, from any address,
        that email is refused (429 `login_backoff`, with Retry-After) for a time that doubles
        with each further failure; a successful login resets the count.
        """
        backoff = limits().login_backoff
        backoff.refuse_if_locked(data["email"])
        user = authenticate_password(data["email"], data["password"])
        if user is None:
            backoff.record_failure(data["email"])
            abort(401, message="Wrong email or password.", code="invalid_credentials")
        backoff.reset(data["email"])
        db = get_db()
        token, secret = issue_token(
            db, user, name=data["name"], ttl_days=state().settings.token_ttl_days
        )
        db.commit()
        token.token = secret
        return token

    @blp.arguments(CursorArgsSchema, location="query")
    @blp.response(200, page_schema(TokenSchema))
    def get(self, args):
        """List my live tokens (secrets are never shown again)"""
        stmt = select(ApiToken).where(
            ApiToken.user_id == current_user_id(), ApiToken.revoked_at.is_(None)
        )
        return paginate(get_db(), stmt, [ApiToken.id], args)


@blp.route("/tokens/<int:token_id>")
class TokenById(MethodView):
    @blp.response(204)
    @blp.alt_response(404, description="No such token.")
    def delete(self, token_id):
        """Revoke a token (it stops working at once)

        At once in the API process that answers; other API processes (more gunicorn workers or
        machines) may accept it for up to ROOMCAST_TOKEN_CACHE_SECONDS (default 2) more.
        """
        token = get_owned_or_404(ApiToken, token_id)
        if token.revoked_at is not None:
            abort(404, message=f"ApiToken {token_id} not found.")
        token.revoked_at = utcnow()
        get_db().commit()
        # This process stops accepting it now; others within ROOMCAST_TOKEN_CACHE_SECONDS.
        state().token_cache.discard(token.token_hash)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, UserSchema)
    def get(self):
        """The user the token belongs to"""
        return get_db().get(User, current_user_id())


@blp.route("/webhook-secret")
class WebhookSecretView(MethodView):
    @blp.response(200, WebhookSecretSchema)
    def get(self):
        """Whether I have a webhook signing secret, and since when (never the secret)"""
        created_at = get_db().scalar(
            select(WebhookSecret.created_at).where(WebhookSecret.user_id == current_user_id())
        )
        return {"exists": created_at is not None, "created_at": created_at}

    @blp.response(201, NewWebhookSecretSchema)
    @blp.alt_response(409, description="Another request is changing the secret; retry.")
    def post(self):
        """Create or rotate my webhook signing secret (shown once)

        Every webhook delivery is signed with it (Standard Webhooks: `webhook-id`,
        `webhook-timestamp`, `webhook-signature`). A new secret replaces the old one at once:
        deliveries from then on, retries included, are signed with the new one.
        """
        secret, row = rotate()
        return {"secret": secret, "created_at": row.created_at}
