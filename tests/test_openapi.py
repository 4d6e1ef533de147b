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
