"""No secret in any response: a populated account (turns run by a real worker on a provider
whose API key comes from the environment, one of them failed by a provider that echoes the key)
is read through every GET of the OpenAPI document, and its error answers too; no password, hash,
token secret, API key or the server's secret key appears in a body or a header.

The owner has a webhook signing secret too: neither it nor its encrypted form appears either.
The exceptions are the token secret and the webhook secret in the answers that create them
(shown once).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from models import User, WebhookSecret
from tests.api_world import (
    OPENAPI_PATH,
    build_world,
    cancel_unfinished,
    operations,
    token_hashes,
)
from tests.conftest import _PROVIDERS_FILE, FAKE_MODEL
from tests.fake_llm import error_reply, text_reply
from tests.helpers import post_turn, wait_done

KEY_ENV = "ROOMCAST_TEST_MATRIX_KEY"
API_KEY = f"sk-matrix-{uuid.uuid4().hex}"
SECRET_KEY = f"roomcast-secret-{uuid.uuid4().hex}"
PROVIDER = "keyed"


@pytest.fixture
def keyed_app(settings, monkeypatch, fake_llm, celery_worker, tmp_path):
    """The app and the worker with a provider whose key is in the environment, and a secret
    key of their own."""
    import worker.tasks
    from api import create_app

    path = tmp_path / "providers.toml"
    path.write_text(
        Path(_PROVIDERS_FILE).read_text()
        + f'\n[providers.{PROVIDER}]\ntype = "openai"\nbase_url = "{fake_llm.base_url}"\n'
        f'default_model = "{FAKE_MODEL}"\napi_key_env = "{KEY_ENV}"\nmax_retries = 0\n'
        f'[providers.{PROVIDER}.prices."{FAKE_MODEL}"]\nprompt = "1.25"\ncompletion = "2.50"\n'
    )
    # A session's event stream has no end: it closes after a moment, and its body is checked.
    keyed = replace(
        settings,
        providers_file=str(path),
        secret_key=SECRET_KEY,
        sse_max_seconds=0.5,
        sse_heartbeat_seconds=0.1,
    )
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setattr(worker.tasks, "settings", keyed)
    return create_app(keyed, test_config={"TESTING": True})


class Responses:
    """Every answer seen, as text (status line, headers, body), for the secret search."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def add(self, label: str, response) -> None:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        body = response.get_data(as_text=True)
        self.seen.append((label, f"{response.status}\n{headers}\n\n{body}"))

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        return [
            f"{label} shows the {what}"
            for label, text in self.seen
            for what, secret in secrets.items()
            if secret and secret in text
        ]


def _secrets(engine, owner, other) -> dict[str, str]:
    with DbSession(engine) as db:
        hashes = db.scalars(select(User.password_hash).where(User.id.in_([owner.id, other.id])))
        found = {f"password hash {i}": h for i, h in enumerate(hashes)}
        sealed = db.scalars(select(WebhookSecret.sealed).where(WebhookSecret.user_id == owner.id))
        found.update({f"sealed webhook secret {i}": s for i, s in enumerate(sealed)})
    # The scrypt hash's digest alone (after the salt) is a secret as well.
    found.update({f"{name} digest": h.rsplit("$", 1)[-1] for name, h in list(found.items())})
    for user in (owner, other):
        for i, token_hash in enumerate(token_hashes(engine, user.id)):
            found[f"token hash {user.id}/{i}"] = token_hash
    return {
        **found,
        "provider API key": API_KEY,
        "server secret key": SECRET_KEY,
        "password": owner.password,
        "owner's token": owner.token,
        "other user's token": other.token,
    }


def _populate(client, engine, owner, fake_llm):
    """The owner's world, its turn completed with usage, and a turn failed by a provider that
    echoes the API key in its error; returns it with the owner's webhook secret."""
    fake_llm.respond_with(lambda request: text_reply("All done."))
    created = client.post("/api/v1/auth/webhook-secret", headers=owner.headers)
    assert created.status_code == 201 and created.json["secret"].startswith("whsec_")
    world = build_world(client, engine, owner, provider=PROVIDER, model=FAKE_MODEL)

    assert wait_done(client, owner, world.ids["turn"])["status"] == "completed"
    assert fake_llm.last.authorization == f"Bearer {API_KEY}"  # the key is really in play
    session = world.ids["room_session"]
    for status in (400, 401, 500):
        fake_llm.then(error_reply(status, f"Incorrect API key provided: {API_KEY}"))
        response = post_turn(client, owner, session, f"provoke a {status}")
        assert response.status_code == 202, response.json
        failed = wait_done(client, owner, response.json["id"])
        assert failed["status"] == "failed", failed
    return world, created.json["secret"]


def test_no_response_shows_a_secret(keyed_app, engine, make_user, fake_llm):
    client = keyed_app.test_client()
    owner, other = make_user(), make_user()
    seen = Responses()
    try:
        world, webhook_secret = _populate(client, engine, owner, fake_llm)
        spec = client.get(OPENAPI_PATH).json
        gets = [op for op in operations(spec) if op.method == "get"]
        assert len(gets) >= 20
        for op in gets:
            headers = {} if op.is_public else owner.headers
            path = world.path(op)
            seen.add(op.label, client.get(path, headers=headers))
            seen.add(f"{op.label} (descending)", client.get(path + "?order=desc", headers=headers))
            if op.path_params:
                missing, _ = world.missing_path(op)
                seen.add(f"{op.label} (missing id)", client.get(missing, headers=headers))
                seen.add(f"{op.label} (other user)", client.get(path, headers=other.headers))
            seen.add(f"{op.label} (bad query)", client.get(path + "?limit=x", headers=headers))
            seen.add(f"{op.label} (garbage token)", client.get(path, headers=_bearer("rc_x")))
        for group_by in ("agent", "room", "model", "day"):
            usage = client.get(f"/api/v1/usage?group_by={group_by}", headers=owner.headers)
            assert usage.status_code == 200
            seen.add(f"usage by {group_by}", usage)
        # Errors about credentials name no credential.
        seen.add(
            "wrong password",
            client.post("/api/v1/auth/tokens", json={"email": owner.email, "password": SECRET_KEY}),
        )
        seen.add(
            "password too long",
            client.post(
                "/api/v1/auth/register",
                json={"email": f"x-{uuid.uuid4().hex[:6]}@example.com", "password": API_KEY * 9},
            ),
        )
        seen.add("someone else's token", client.get("/api/v1/auth/me", headers=_bearer(API_KEY)))
        # The token list shows hints, never the secrets (the creating answer alone does).
        created = client.post(
            "/api/v1/auth/tokens", json={"email": owner.email, "password": owner.password}
        )
        assert created.status_code == 201 and created.json["token"].startswith("rc_")
        listed = client.get("/api/v1/auth/tokens", headers=owner.headers)
        seen.add("token list after a new token", listed)
        secrets = _secrets(engine, owner, other)
        secrets["new token"] = created.json["token"]
        secrets["webhook secret"] = webhook_secret
        secrets["webhook secret's key"] = webhook_secret.removeprefix("whsec_")
        assert not seen.leaks(secrets), "\n".join(seen.leaks(secrets))
        assert len(seen.seen) > 100
    finally:
        cancel_unfinished(engine, [owner.id, other.id])


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
