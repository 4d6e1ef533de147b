import pytest


def test_openapi_document_lists_endpoints_and_security(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    for path in [
        "/api/v1/health",
        "/api/v1/health/ready",
        "/api/v1/auth/register",
        "/api/v1/auth/tokens",
        "/api/v1/auth/tokens/{token_id}",
        "/api/v1/auth/me",
    ]:
        assert path in spec["paths"], path
    # Public endpoints say so; the rest inherit the bearer requirement.
    assert spec["paths"]["/api/v1/auth/register"]["post"]["security"] == []
    assert "security" not in spec["paths"]["/api/v1/auth/me"]["get"]
    assert "Error" in spec["components"]["schemas"]


def test_swagger_ui_is_served(client):
    r = client.get("/api/v1/docs/")
    assert r.status_code == 200 and b"swagger" in r.data.lower()


def test_turn_poll_documents_its_etag_and_304(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    path = spec["paths"]["/api/v1/turns/{turn_id}"]
    poll = path["get"]
    assert {"$ref": "#/components/parameters/IF_NONE_MATCH"} in poll["parameters"] + path.get(
        "parameters", []
    )
    assert spec["components"]["parameters"]["IF_NONE_MATCH"]["in"] == "header"
    assert [p["name"] for p in poll["parameters"] if "name" in p] == ["wait", "until"]
    ok = poll["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Turn"}
    assert ok["headers"]["ETag"] == {"$ref": "#/components/headers/ETAG"}
    assert poll["responses"]["304"] == {"$ref": "#/components/responses/NOT_MODIFIED"}
    assert "404" in poll["responses"] and "422" in poll["responses"]


def _properties(spec):
    for name, schema in spec["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            yield name, field, prop


def test_costs_are_documented_as_the_decimal_strings_they_are(client, user, make_agent):
    spec = client.get("/api/v1/docs/openapi.json").json
    costs = [(name, prop) for name, field, prop in _properties(spec) if field == "cost"]
    assert {name for name, _ in costs} >= {"UsageTotals", "UsageSums", "UsageRecord"}
    for name, prop in costs:
        assert prop["type"] == "string" and prop["format"] == "decimal", name
    assert client.get("/api/v1/usage", headers=user.headers).json["totals"]["cost"] == "0.00000000"


@pytest.mark.parametrize("scope", ["rooms", "agents"])
def test_scoped_session_routes_are_documented(client, scope):
    path = client.get("/api/v1/docs/openapi.json").json["paths"][
        f"/api/v1/{scope}/{{scope_id}}/sessions"
    ]
    created = path["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/Session"}
    assert path["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SessionCreate"
    }
    listed = path["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/SessionPage"}
    assert {"404", "422"} <= set(path["get"]["responses"])


def test_cursor_is_documented_as_a_string(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    params = [
        p for p in spec["paths"]["/api/v1/agents"]["get"]["parameters"] if p["name"] == "cursor"
    ]
    assert params[0]["schema"] == {"type": "string", "nullable": True}


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("put", "/api/v1/agents", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("post", "/api/v1/agents/1", {"GET", "HEAD", "OPTIONS", "PATCH", "DELETE"}),
        ("delete", "/api/v1/health", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_405_names_the_allowed_methods(client, user, method, path, allowed):
    r = getattr(client, method)(path, headers=user.headers)
    assert r.status_code == 405
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == allowed
    assert r.mimetype == "application/json"
    assert r.json == {
        "status": 405,
        "code": "method_not_allowed",
        "message": "The method is not allowed for the requested URL.",
    }


def test_an_empty_cursor_is_the_first_page(client, user, make_agent):
    for name in ("a", "b", "c"):
        make_agent(user, name=name)
    first = client.get("/api/v1/agents", query_string={"limit": 2}, headers=user.headers).json
    empty = client.get(
        "/api/v1/agents", query_string={"limit": 2, "cursor": ""}, headers=user.headers
    )
    assert empty.status_code == 200 and empty.json == first
    second = client.get(
        "/api/v1/agents",
        query_string={"limit": 2, "cursor": first["next_cursor"]},
        headers=user.headers,
    ).json
    assert [a["name"] for a in first["data"] + second["data"]] == ["a", "b", "c"]


def _tampered(cursor: str) -> str:
    payload, _, signature = cursor.partition(".")
    return f"{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


@pytest.mark.parametrize(
    "cursor",
    [
        "WzFd",  # base64 of [1], unsigned
        "WzFd.",
        ".WzFd",
        "WzFd.AAAAAAAAAAAAAAAA",
        "WzFd.!!",
        "\u00e9",
        " ",
        "x" * 5000,
    ],
)
def test_a_crafted_cursor_is_422_naming_cursor(client, user, cursor):
    r = client.get("/api/v1/agents", query_string={"cursor": cursor}, headers=user.headers)
    assert r.status_code == 422, r.json
    assert r.json == {
        "status": 422,
        "code": "validation_error",
        "message": "The request is invalid; see errors for each field.",
        "errors": {"cursor": ["Not a valid cursor; pass back next_cursor unchanged."]},
    }


def test_a_cursor_signed_otherwise_or_altered_is_422(client, user, make_agent, cursor_of):
    from api.pagination import encode_cursor

    for name in ("a", "b"):
        make_agent(user, name=name)
    real = client.get("/api/v1/agents", query_string={"limit": 1}, headers=user.headers).json
    good = real["next_cursor"]
    assert good == cursor_of([real["data"][0]["id"]])
    for bad in (_tampered(good), encode_cursor([real["data"][0]["id"]], secret="another-secret")):
        r = client.get("/api/v1/agents", query_string={"cursor": bad}, headers=user.headers)
        assert r.status_code == 422 and r.json["errors"] == {
            "cursor": ["Not a valid cursor; pass back next_cursor unchanged."]
        }
    assert (
        client.get("/api/v1/agents", query_string={"cursor": good}, headers=user.headers).json[
            "data"
        ][0]["name"]
        == "b"
    )
