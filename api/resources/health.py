"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text

from models.local_model import local_model_status
from models.providers import LOCAL_PROVIDER
from models.schema_version import code_head, database_revision

from ..auth import public
from ..broker import check_broker
from ..errors import OUTAGE_RETRY_AFTER_SECONDS
from ..schemas.storable import Schema
from ..state import state

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Health probes.")

try:
    APP_VERSION = version("roomcast")
except PackageNotFoundError:  # running from a source tree that was not installed
    APP_VERSION = "0+unknown"


class LivenessSchema(Schema):
    status = ma.fields.String(metadata={"example": "ok"})
    version = ma.fields.String(metadata={"example": APP_VERSION})


class CheckSchema(Schema):
    ok = ma.fields.Boolean()
    error = ma.fields.String(allow_none=True)


class MigrationCheckSchema(CheckSchema):
    database_revision = ma.fields.String(allow_none=True)
    code_head = ma.fields.String(allow_none=True)


class LocalModelCheckSchema(CheckSchema):
    required = ma.fields.Boolean(
        metadata={
            "description": "Whether readiness depends on it: true when the server's default"
            " provider is the built-in local model."
        }
    )


class ReadinessChecksSchema(Schema):
    database = ma.fields.Nested(CheckSchema)
    broker = ma.fields.Nested(CheckSchema)
    migrations = ma.fields.Nested(MigrationCheckSchema)
    local_model = ma.fields.Nested(
        LocalModelCheckSchema,
        metadata={"description": "The built-in local model (SmolLM2 via xllamacpp) is installed."},
    )


class ReadinessSchema(Schema):
    status = ma.fields.String(metadata={"description": "ready or unavailable"})
    version = ma.fields.String()
    checks = ma.fields.Nested(ReadinessChecksSchema)


@blp.route("")
class Liveness(MethodView):
    @public(blp)
    @blp.response(200, LivenessSchema)
    def get(self):
        """Liveness: the process answers"""
        return {"status": "ok", "version": APP_VERSION}


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


@blp.route("/ready")
class Readiness(MethodView):
    @public(blp)
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="A dependency is down.")
    def get(self):
        """Readiness: database, broker, schema revision and local model

        The local model counts only when it is the default provider; it is reported either way.
        """
        app_state = state()
        head = code_head()
        database = {"ok": True, "error": None}
        migrations = {"ok": False, "error": None, "database_revision": None, "code_head": head}
        try:
            with app_state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                migrations["database_revision"] = database_revision(conn)
        except Exception as exc:  # any failure means "not ready"; say which and why
            database = {"ok": False, "error": _error(exc)}
            migrations["error"] = "database unreachable"
        else:
            if migrations["database_revision"] == head:
                migrations["ok"] = True
            else:
                migrations["error"] = (
                    f"database schema is at {migrations['database_revision']}, code expects {head}"
                    " (run the migrations, or deploy the matching code)"
                )
        broker = {"ok": True, "error": None}
        try:
            check_broker(app_state.settings.broker_url)
        except Exception as exc:
            broker = {"ok": False, "error": _error(exc)}
        # Looked up in this process's environment: the API and the workers share an install.
        model_ok, model_error = local_model_status()
        local_model = {
            "ok": model_ok,
            "error": model_error,
            "required": app_state.settings.default_provider == LOCAL_PROVIDER,
        }
        checks = {
            "database": database,
            "broker": broker,
            "migrations": migrations,
            "local_model": local_model,
        }
        ready = all(check["ok"] or not check.get("required", True) for check in checks.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "version": APP_VERSION,
            "checks": checks,
        }
        if ready:
            return body
        return body, 503, {"Retry-After": OUTAGE_RETRY_AFTER_SECONDS}
