"""`make smoke` against a live server on loopback (the real HTTP path an operator uses)."""

import io
import threading

import pytest
from werkzeug.serving import make_server

from scripts.smoke import run


@pytest.fixture
def live_server(app, celery_worker):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_smoke_passes_every_leg_against_a_live_server(live_server, user, client):
    out = io.StringIO()
    code = run(
        {
            "SMOKE_BASE_URL": live_server,
            "SMOKE_TOKEN": user.token,
            "SMOKE_PROVIDER": "instant",
            "SMOKE_TURN_TIMEOUT": "30",
        },
        out,
    )
    lines = out.getvalue().splitlines()
    assert code == 0, out.getvalue()
    legs = [line.split("(")[0].removeprefix("ok").strip() for line in lines]
    assert legs == [
        "health",
        "readiness",
        "auth/me",
        "create agent",
        "standalone session",
        "standalone turn",
        "history",
        "create room",
        "room session",
        "room turn",
        "room history",
        "cleanup",
    ]
    # Cleanup left nothing of the smoke run behind.
    assert client.get("/api/v1/agents", headers=user.headers).json["data"] == []
    assert client.get("/api/v1/rooms", headers=user.headers).json["data"] == []


def test_smoke_logs_in_with_email_and_password(live_server, user):
    out = io.StringIO()
    code = run(
        {
            "SMOKE_BASE_URL": live_server,
            "SMOKE_EMAIL": user.email,
            "SMOKE_PASSWORD": user.password,
            "SMOKE_PROVIDER": "instant",
        },
        out,
    )
    assert code == 0, out.getvalue()


def test_smoke_stops_at_the_first_failing_leg(live_server):
    out = io.StringIO()
    code = run({"SMOKE_BASE_URL": live_server, "SMOKE_TOKEN": "rc_wrong"}, out)
    lines = out.getvalue().splitlines()
    assert code == 1
    assert lines[-1].startswith("FAIL auth/me") and "401" in lines[-1]
    assert len(lines) == 3


def test_smoke_reports_an_unreachable_deployment():
    out = io.StringIO()
    assert run({"SMOKE_BASE_URL": "http://127.0.0.1:1"}, out) == 1
    assert out.getvalue().startswith("FAIL health")
    assert run({}, io.StringIO()) == 2
