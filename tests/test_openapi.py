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
