from datetime import timedelta

import pytest

from models import ApiToken, utcnow
from models.users import hash_token

REGISTER = "/api/v1/auth/register"
TOKENS = "/api/v1/auth/tokens"
ME = "/api/v1/auth/me"


def register(client, email, password="long enough pw"):
    return client.post(REGISTER, json={"email": email, "password": password})


def login(client, email, password="long enough pw", **extra):
    return client.post(TOKENS, json={"email": email, "password": password, **extra})


def test_register_login_me_revoke(client):
    r = register(client, "Ada@Example.com")
    assert r.status_code == 201
    assert r.json["email"] == "ada@example.com"
    assert "password" not in r.json and "password_hash" not in r.json

    r = login(client, "ada@example.com", name="laptop")
    assert r.status_code == 201
    token = r.json["token"]
    assert token.startswith("rc_") and r.json["name"] == "laptop"
    assert r.json["token_hint"] == token[:9]

    me = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["email"] == "ada@example.com"

    listed = client.get(TOKENS, headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json["data"]] == [r.json["id"]]
    assert "token" not in listed.json["data"][0]

    r = client.delete(f"{TOKENS}/{r.json['id']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204
    r = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json["code"] == "unauthorized" and "revoked" in r.json["message"].lower()


def test_token_is_stored_hashed(client, db):
    register(client, "hashed@example.com")
    token = login(client, "hashed@example.com").json
    row = db.get(ApiToken, token["id"])
    assert row.token_hash == hash_token(token["token"]) and token["token"] not in row.token_hash


def test_duplicate_email_is_409_case_insensitive(client):
    assert register(client, "dup@example.com").status_code == 201
    r = register(client, "DUP@example.com")
    assert r.status_code == 409
    assert r.json == {
        "status": 409,
        "code": "email_taken",
        "message": "This email is already registered.",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "long enough pw"}, "email"),
        ({"email": "short@example.com", "password": "short"}, "password"),
        ({"email": "long@example.com", "password": "x" * 300}, "password"),
        ({"password": "long enough pw"}, "email"),
        ({"email": "x@example.com", "password": "long enough pw", "admin": True}, "admin"),
        ({"email": 12, "password": "long enough pw"}, "email"),
    ],
)
def test_register_validation(client, body, field):
    r = client.post(REGISTER, json=body)
    assert r.status_code == 422
    assert r.json["code"] == "validation_error"
    assert field in r.json["errors"]


def test_register_can_be_disabled(settings, migrated):
    from dataclasses import replace

    from api import create_app

    app = create_app(replace(settings, registration_enabled=False), {"TESTING": True})
    r = app.test_client().post(
        REGISTER, json={"email": "no@example.com", "password": "long enough pw"}
    )
    assert r.status_code == 403 and r.json["code"] == "registration_disabled"


def test_wrong_password_and_unknown_email_are_401(client):
    register(client, "pw@example.com")
    for email, password in [("pw@example.com", "wrong password"), ("nobody@example.com", "x" * 10)]:
        r = login(client, email, password)
        assert r.status_code == 401
        assert r.json["code"] == "invalid_credentials"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer rc_not-a-real-token", "rc_abc"],
)
def test_missing_or_invalid_token_is_401(client, header):
    headers = {"Authorization": header} if header is not None else {}
    r = client.get(ME, headers=headers)
    assert r.status_code == 401
    assert r.json["status"] == 401 and r.json["code"] == "unauthorized" and r.json["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_401(client, user, db):
    token = db.query(ApiToken).filter_by(user_id=user.id).one()
    token.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    r = client.get(ME, headers=user.headers)
    assert r.status_code == 401 and "expired" in r.json["message"]


def test_cannot_revoke_another_users_token(client, make_user):
    alice, bob = make_user(), make_user()
    bob_token = client.get(TOKENS, headers=bob.headers).json["data"][0]
    r = client.delete(f"{TOKENS}/{bob_token['id']}", headers=alice.headers)
    assert r.status_code == 404 and r.json["code"] == "not_found"
    assert client.get(ME, headers=bob.headers).status_code == 200
    # Revoking twice (with a second token): the second time there is nothing to revoke.
    second = login(client, bob.email, bob.password).json["token"]
    headers = {"Authorization": f"Bearer {second}"}
    assert client.delete(f"{TOKENS}/{bob_token['id']}", headers=headers).status_code == 204
    assert client.delete(f"{TOKENS}/{bob_token['id']}", headers=headers).status_code == 404
    assert client.get(ME, headers=bob.headers).status_code == 401


def test_token_list_is_paginated(client, user):
    for i in range(4):
        assert login(client, user.email, user.password, name=f"t{i}").status_code == 201
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(TOKENS, headers=user.headers, query_string=params).json
        seen += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert len(seen) == 5 and seen == sorted(seen)


def test_cli_creates_user_and_prints_token(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "Ops@Example.com"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    me = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["email"] == "ops@example.com"
    # Running it again for the same user issues a second token for the same account.
    again = runner.invoke(args=["users", "create", "ops@example.com"])
    assert again.exit_code == 0 and again.output.strip() != token
    bad = runner.invoke(args=["users", "create", "not-an-email"])
    assert bad.exit_code != 0
