"""Every error is JSON in one shape: status, code, message (and errors for 422)."""

import pytest


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.is_json, response.data[:200]
    body = response.json
    assert body["status"] == status and body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/api/v1/nope"), 404, "not_found")
    assert_error(client.get("/nope"), 404, "not_found")  # "/" is the console page


def test_wrong_method_is_json_405(client):
    assert_error(client.put("/api/v1/health"), 405, "method_not_allowed")


def test_malformed_json_is_400(client):
    r = client.post("/api/v1/auth/register", data="{not json", content_type="application/json")
    body = assert_error(r, 400, "bad_request")
    assert "JSON" in body["message"]


def test_oversized_body_is_413(client, settings):
    payload = '{"email": "%s"}' % ("x" * (settings.max_request_bytes + 10))
    r = client.post("/api/v1/auth/register", data=payload, content_type="application/json")
    assert_error(r, 413, "payload_too_large")


def test_validation_error_has_field_errors(client):
    body = assert_error(client.post("/api/v1/auth/register", json={}), 422, "validation_error")
    assert set(body["errors"]) == {"email", "password"}


def test_json_body_must_be_an_object(client):
    r = client.post("/api/v1/auth/register", json=["a", "list"])
    assert_error(r, 422, "validation_error")


def test_unhandled_exception_is_json_500(migrated, settings):
    from api import create_app

    app = create_app(settings, test_config={"TESTING": True})

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    app.view_functions["boom"].public = True
    r = app.test_client().get("/api/v1/boom")
    body = assert_error(r, 500, "internal_error")
    assert "secret internal detail" not in body["message"]


@pytest.mark.parametrize("path", ["/api/v1/auth/me", "/api/v1/auth/tokens"])
def test_auth_error_shape(client, path):
    assert_error(client.get(path), 401, "unauthorized")
