"""Webhooks end to end: turns run by the real worker, their ends POSTed by the real delivery task
to a real receiver on loopback (allowed by ROOMCAST_WEBHOOK_ALLOWED_HOSTS), signatures checked
by a verifier written from the spec (tests/webhook_receiver.py), retries on short backoff."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from models import Turn, WebhookSecret, lifecycle, utcnow
from models.webhook_urls import AddressRefused, parse_webhook_url, resolve_checked
from tests.fake_llm import error_reply
from tests.helpers import accept_undispatched, post_turn, start_session, wait_done
from tests.webhook_receiver import Received, Reply, WebhookReceiver, verify

SECRET_PATH = "/api/v1/auth/webhook-secret"


@pytest.fixture(scope="module")
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hook_settings(settings, receiver):
    """The receiver allowed (by address and port), a short timeout and backoff."""
    return replace(
        settings,
        webhook_allowed_hosts=frozenset({("127.0.0.1", receiver.port)}),
        webhook_timeout_seconds=0.5,
        webhook_retry_base_seconds=0.05,
    )


@pytest.fixture(scope="module")
def hooks_app(hook_settings, migrated):
    from api import create_app

    return create_app(hook_settings, test_config={"TESTING": True})


@pytest.fixture
def client(hooks_app, hook_settings, receiver, celery_worker, monkeypatch):
    """The API and the worker on the webhook settings; the receiver emptied."""
    import worker.tasks

    monkeypatch.setattr(worker.tasks, "settings", hook_settings)
    receiver.reset()
    yield hooks_app.test_client()
    receiver.reset()


@pytest.fixture
def owner(client, make_user):
    """A user with a webhook secret: (user, secret)."""
    user = make_user()
    response = client.post(SECRET_PATH, headers=user.headers)
    assert response.status_code == 201, response.json
    return user, response.json["secret"]


def deliveries(receiver: WebhookReceiver, turn: dict, count: int) -> list[Received]:
    """The first ``count`` requests the receiver got for ``turn``'s webhook."""
    deadline = time.monotonic() + 15
    while True:
        mine = [r for r in receiver.received if r.headers["webhook-id"] == turn["webhook"]["id"]]
        if len(mine) >= count or time.monotonic() > deadline:
            assert len(mine) >= count, f"{len(mine)} of {count} deliveries of turn {turn['id']}"
            return mine[:count]
        receiver.wait_for(len(receiver.received) + 1, timeout=deadline - time.monotonic())


def webhook_state(client, user, turn_id: int, until=lambda hook: hook["status"] != "pending"):
    """The turn's JSON once its webhook state meets ``until`` (default: no longer pending)."""
    deadline = time.monotonic() + 15
    while True:
        turn = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json
        if until(turn["webhook"]) or time.monotonic() > deadline:
            assert until(turn["webhook"]), turn["webhook"]
            return turn
        time.sleep(0.02)


def hooked_turn(client, user, session_id: int, url: str, content: str = "hello") -> dict:
    response = post_turn(client, user, session_id, content, webhook=url)
    assert response.status_code == 202, response.json
    return response.json


@pytest.fixture
def session_id(client, owner, make_agent):
    user, _ = owner
    return start_session(client, user, agent=make_agent(user), multitask="enqueue")["id"]


def test_a_turns_end_is_posted_once_signed_with_the_owners_secret(
    client, owner, session_id, receiver, engine, caplog, hook_settings
):
    user, secret = owner
    accepted = hooked_turn(client, user, session_id, receiver.url())
    hook = accepted["webhook"]
    assert hook["url"] == receiver.url() and hook["status"] == "pending"
    assert hook["attempts"] == 0 and hook["next_attempt_at"] is None  # due at the turn's end
    assert wait_done(client, user, accepted["id"])["status"] == "completed"
    turn = webhook_state(client, user, accepted["id"])
    assert turn["webhook"] == {
        **hook,
        "status": "delivered",
        "attempts": 1,
        "last_status": 200,
        "last_error": None,
        "next_attempt_at": None,
    }
    (delivery,) = deliveries(receiver, turn, 1)
    assert delivery.path == "/hook"
    assert delivery.headers["content-type"] == "application/json"
    body = verify(secret, delivery)
    # The turn's JSON as GET answers it, its webhook as it stood during the attempt (the
    # delivery's state is the turn's: recording it moved updated_at).
    during = {"webhook": body["webhook"], "updated_at": body["updated_at"]}
    assert body == {**turn, **during}
    assert body["webhook"] == {**turn["webhook"], **body["webhook"], "attempts": 1}
    assert body["webhook"]["status"] == "pending" and body["updated_at"] < turn["updated_at"]
    assert body["status"] == "completed" and body["message_ids"]

    # A stale copy of the task (the sweep's, a redelivery) attempts nothing.
    from worker import webhooks
    from worker.app import app as celery_app

    webhooks.deliver(accepted["id"], 0, hook_settings, celery_app)
    assert len(deliveries(receiver, turn, 1)) == 1 and len(receiver.received) == 1
    # The secret is stored encrypted, and in no log line.
    with DbSession(engine) as db:
        sealed = db.scalar(select(WebhookSecret.sealed).where(WebhookSecret.user_id == user.id))
    assert secret not in sealed and secret[6:] not in sealed
    assert secret not in caplog.text and secret[6:] not in caplog.text


def test_failed_deliveries_are_retried_with_the_same_webhook_id(
    client, owner, session_id, receiver
):
    user, secret = owner
    receiver.then(Reply(503), Reply(503))
    turn = webhook_state(client, user, hooked_turn(client, user, session_id, receiver.url())["id"])
    assert turn["webhook"]["status"] == "delivered"
    assert turn["webhook"]["attempts"] == 3 and turn["webhook"]["last_status"] == 200
    attempts = deliveries(receiver, turn, 3)
    assert {a.headers["webhook-id"] for a in attempts} == {turn["webhook"]["id"]}
    assert [verify(secret, a)["webhook"]["attempts"] for a in attempts] == [1, 2, 3]
    assert attempts[0].at < attempts[1].at < attempts[2].at


def test_a_4xx_fails_at_once_and_a_429_waits_for_its_retry_after(
    client, owner, session_id, receiver
):
    user, _ = owner
    receiver.then(Reply(400))
    refused = webhook_state(
        client, user, hooked_turn(client, user, session_id, receiver.url())["id"]
    )
    assert refused["webhook"] | {"id": None, "url": None} == {
        "id": None,
        "url": None,
        "status": "failed",
        "attempts": 1,
        "last_status": 400,
        "last_error": None,
        "next_attempt_at": None,
    }
    receiver.then(Reply(429, {"Retry-After": "1"}))
    turn = webhook_state(client, user, hooked_turn(client, user, session_id, receiver.url())["id"])
    assert turn["webhook"]["status"] == "delivered" and turn["webhook"]["attempts"] == 2
    first, second = deliveries(receiver, turn, 2)
    assert second.at - first.at >= 0.95  # the backoff is 0.05 s: Retry-After decided
    assert len(deliveries(receiver, refused, 1)) == 1  # the 400 was never retried


def test_a_receiver_that_never_answers_times_out_and_is_tried_again(
    client, owner, session_id, receiver, hook_settings, monkeypatch
):
    import worker.tasks

    user, _ = owner
    monkeypatch.setattr(
        worker.tasks, "settings", replace(hook_settings, webhook_retry_base_seconds=1.5)
    )
    receiver.then(Reply(hang=True))
    turn_id = hooked_turn(client, user, session_id, receiver.url())["id"]
    waiting = webhook_state(client, user, turn_id, until=lambda hook: hook["attempts"] == 1)
    waiting = webhook_state(client, user, turn_id, until=lambda hook: hook["last_error"])
    hook = waiting["webhook"]
    assert hook["status"] == "pending" and hook["last_error"] == "timeout"
    assert hook["attempts"] == 1 and hook["last_status"] is None
    due_in = datetime.fromisoformat(hook["next_attempt_at"]) - datetime.now().astimezone()
    assert timedelta(seconds=0.5) < due_in < timedelta(seconds=2)
    turn = webhook_state(client, user, turn_id)
    assert turn["webhook"]["status"] == "delivered" and turn["webhook"]["attempts"] == 2
    assert turn["webhook"]["last_error"] is None


def test_the_answers_body_is_not_read_and_redirects_are_not_followed(
    client, owner, session_id, receiver
):
    user, _ = owner
    receiver.then(Reply(200, endless_body=True))
    endless = webhook_state(
        client, user, hooked_turn(client, user, session_id, receiver.url())["id"]
    )
    assert endless["webhook"]["status"] == "delivered"
    receiver.then(Reply(302, {"Location": receiver.url("/elsewhere")}))
    moved = webhook_state(client, user, hooked_turn(client, user, session_id, receiver.url())["id"])
    assert moved["webhook"]["status"] == "failed" and moved["webhook"]["last_status"] == 302
    assert [r.path for r in deliveries(receiver, moved, 1)] == ["/hook"]
    assert not any(r.path == "/elsewhere" for r in receiver.received)


def test_the_session_default_is_inherited_and_a_turn_may_override_it(
    client, owner, session_id, receiver
):
    user, _ = owner
    default = receiver.url("/session")
    response = client.patch(
        f"/api/v1/sessions/{session_id}", json={"webhook": default}, headers=user.headers
    )
    assert response.status_code == 200 and response.json["webhook"] == default
    inherited = post_turn(client, user, session_id, "inherits").json
    overridden = hooked_turn(client, user, session_id, receiver.url("/turn"))
    silent = post_turn(client, user, session_id, "no webhook", webhook=None).json
    assert inherited["webhook"]["url"] == default
    assert overridden["webhook"]["url"] == receiver.url("/turn")
    assert silent["webhook"] is None
    for turn, path in ((inherited, "/session"), (overridden, "/turn")):
        assert webhook_state(client, user, turn["id"])["webhook"]["status"] == "delivered"
        assert [r.path for r in deliveries(receiver, turn, 1)] == [path]
    assert wait_done(client, user, silent["id"])["webhook"] is None
    # A session created with one passes it on too.
    agent_id = client.get(f"/api/v1/sessions/{session_id}", headers=user.headers).json["agent_id"]
    created = client.post(
        f"/api/v1/agents/{agent_id}/sessions", json={"webhook": default}, headers=user.headers
    )
    assert created.status_code == 201 and created.json["webhook"] == default


def test_failed_and_cancelled_turns_are_delivered_too(
    client, owner, make_agent, receiver, fake_llm, hook_settings
):
    user, secret = owner
    fake_llm.respond_with(lambda request: error_reply(400, "the model refused"))
    agent = make_agent(user, provider="fake", model="fake-model")
    failing = start_session(client, user, agent=agent)["id"]
    failed = webhook_state(client, user, hooked_turn(client, user, failing, receiver.url())["id"])
    assert verify(secret, deliveries(receiver, failed, 1)[0])["status"] == "failed"

    # A turn no worker takes (its broker was down), cancelled: the API's commit sends it.
    session = start_session(client, user, agent=agent, webhook=receiver.url("/cancelled"))["id"]
    turn_id = accept_undispatched(hook_settings, user, session)
    assert client.post(f"/api/v1/turns/{turn_id}/cancel", headers=user.headers).status_code == 200
    cancelled = webhook_state(client, user, turn_id)
    body = verify(secret, deliveries(receiver, cancelled, 1)[0])
    assert body["status"] == "cancelled" and body["id"] == turn_id


def test_an_end_whose_send_was_lost_is_delivered_by_the_sweep(
    client, owner, make_agent, receiver, hook_settings, engine
):
    """The ending commit writes the delivery's due time: a process that dies right after it
    (here: a session with no sender) loses nothing."""
    from worker import maintenance
    from worker.app import app as celery_app

    user, _ = owner
    session = start_session(client, user, agent=make_agent(user), webhook=receiver.url())["id"]
    turn_id = accept_undispatched(hook_settings, user, session)
    with DbSession(engine) as db:
        lifecycle.cancel(db, db.get(Turn, turn_id), stop_reason="operator")
        db.commit()
    due = client.get(f"/api/v1/turns/{turn_id}", headers=user.headers).json["webhook"]
    assert due["status"] == "pending" and due["attempts"] == 0 and due["next_attempt_at"]
    assert turn_id not in maintenance.sweep_webhooks(celery_app)  # due for less than the grace
    assert turn_id in maintenance.sweep_webhooks(celery_app, grace=timedelta(0))
    assert webhook_state(client, user, turn_id)["webhook"]["status"] == "delivered"


def test_a_turn_the_reaper_fails_is_delivered(client, owner, make_agent, receiver, hook_settings):
    """The reaper's ends (here: queued past QUEUE_TIMEOUT) make the webhook due too."""
    from sqlalchemy import update

    from models.lifecycle import QUEUE_TIMEOUT
    from worker import db as worker_db
    from worker import maintenance
    from worker.app import app as celery_app

    user, secret = owner
    session = start_session(client, user, agent=make_agent(user), webhook=receiver.url())["id"]
    turn_id = accept_undispatched(hook_settings, user, session)
    with worker_db.session() as db, db.begin():
        db.execute(
            update(Turn)
            .where(Turn.id == turn_id)
            .values(updated_at=utcnow() - QUEUE_TIMEOUT - timedelta(minutes=1))
        )
    assert turn_id in maintenance.reap_expired(celery_app, hook_settings.broker_url)[1]
    turn = webhook_state(client, user, turn_id)
    body = verify(secret, deliveries(receiver, turn, 1)[0])
    assert (body["status"], body["stop_reason"]) == ("failed", "not_started")


REFUSED = [
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "not a url",
    "",
    "http:///no-host",
    "http://example.com:0/",
    "http://example.com:99999/",
    "http://evil@127.0.0.1/",
    "http://user:secret@example.com/",
    "http://127.0.0.1\\@example.com/",
    "http://127.0.0.1/",
    "http://127.0.0.1./",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://999.1/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:8.8.8.8]/",
    "http://[2002:7f00:1::1]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://100.64.0.1/",
    "http://255.255.255.255/",
    "https://exa mple.com/",
    "https://%31%32%37.0.0.1/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_webhook_that_could_reach_a_private_address_is_refused(client, owner, session_id, url):
    user, _ = owner
    for response in (
        post_turn(client, user, session_id, webhook=url),
        client.patch(f"/api/v1/sessions/{session_id}", json={"webhook": url}, headers=user.headers),
    ):
        assert response.status_code == 422, response.json
        assert response.json["code"] == "validation_error" and "webhook" in response.json["errors"]
    turns = client.get(f"/api/v1/sessions/{session_id}/turns", headers=user.headers).json
    session = client.get(f"/api/v1/sessions/{session_id}", headers=user.headers).json
    assert turns["data"] == [] and session["webhook"] is None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks?token=abc",
        "https://EXAMPLE.com./x",
        "http://93.184.216.34:8080/x",
        "https://[2606:4700::1111]/x",
        "https://bücher.example/hook",
    ],
)
def test_public_webhooks_are_accepted(client, owner, session_id, url):
    user, _ = owner
    response = client.patch(
        f"/api/v1/sessions/{session_id}", json={"webhook": url}, headers=user.headers
    )
    assert response.status_code == 200, response.json
    assert response.json["webhook"] == url


def test_a_name_that_resolves_to_loopback_is_refused_when_delivered(
    client, owner, session_id, receiver, hook_settings, monkeypatch
):
    import worker.tasks

    user, _ = owner
    by_name = receiver.url(host="localhost")  # a name: accepted, checked once resolved
    turn = webhook_state(client, user, hooked_turn(client, user, session_id, by_name)["id"])
    assert turn["webhook"] | {"id": None} == {
        "id": None,
        "url": by_name,
        "status": "failed",
        "attempts": 1,
        "last_status": None,
        "last_error": "address_refused",
        "next_attempt_at": None,
    }
    assert receiver.received == []
    with pytest.raises(AddressRefused, match="resolves to"):
        resolve_checked(parse_webhook_url(by_name), hook_settings.webhook_allowed_hosts)

    # Allowed by name, it is delivered: to the address checked, with the name as its Host.
    allowed = hook_settings.webhook_allowed_hosts | {("localhost", receiver.port)}
    monkeypatch.setattr(
        worker.tasks, "settings", replace(hook_settings, webhook_allowed_hosts=allowed)
    )
    turn = webhook_state(client, user, hooked_turn(client, user, session_id, by_name)["id"])
    assert turn["webhook"]["status"] == "delivered"
    (delivery,) = deliveries(receiver, turn, 1)
    assert delivery.headers["host"] == f"localhost:{receiver.port}"


def test_a_webhook_needs_a_secret_which_is_shown_once_and_only_to_its_owner(
    client, owner, make_user, make_agent, session_id, receiver
):
    user, secret = owner
    stranger = make_user()
    session = start_session(client, stranger, agent=make_agent(stranger))["id"]
    for response in (
        post_turn(client, stranger, session, webhook=receiver.url()),
        client.patch(
            f"/api/v1/sessions/{session}",
            json={"webhook": receiver.url()},
            headers=stranger.headers,
        ),
    ):
        assert response.status_code == 422, response.json
        assert response.json["code"] == "webhook_secret_required"
        assert "webhook" in response.json["errors"]

    mine = client.get(SECRET_PATH, headers=user.headers)
    theirs = client.get(SECRET_PATH, headers=stranger.headers)
    assert mine.status_code == 200 and mine.json["exists"] and mine.json["created_at"]
    assert secret not in mine.get_data(as_text=True)
    assert theirs.json == {"exists": False, "created_at": None}
    their_secret = client.post(SECRET_PATH, headers=stranger.headers).json["secret"]
    assert their_secret != secret

    def signed_by(signer: str, not_by: str) -> None:
        turn_id = hooked_turn(client, user, session_id, receiver.url())["id"]
        (delivery,) = deliveries(receiver, webhook_state(client, user, turn_id), 1)
        verify(signer, delivery)
        with pytest.raises(AssertionError, match="signature"):
            verify(not_by, delivery)

    signed_by(secret, not_by=their_secret)
    # Rotated: deliveries from then on are signed with the new secret only.
    rotated = client.post(SECRET_PATH, headers=user.headers).json["secret"]
    assert rotated != secret
    signed_by(rotated, not_by=secret)
