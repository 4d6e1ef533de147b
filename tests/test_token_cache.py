"""Verified tokens are cached per process for ROOMCAST_TOKEN_CACHE_SECONDS; revocation and
expiry still end them, within the documented bounds."""

import importlib
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from api.token_cache import TokenCache, VerifiedToken
from models import ApiToken, utcnow

ME = "/api/v1/auth/me"
# The attribute api.auth is the auth blueprint module (api/__init__ imports it by that name);
# this is the authentication module.
auth = importlib.import_module("api.auth")


@pytest.fixture
def app_with_cache(settings, migrated):
    """``app_with_cache(seconds)``: an app (its own token cache) with that cache lifetime."""
    from api import create_app

    def make(seconds: float):
        return create_app(replace(settings, token_cache_seconds=seconds), {"TESTING": True})

    return make


def revoke_in_database(db, user) -> None:
    """What another API process does when it revokes the user's token."""
    db.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(revoked_at=utcnow()))
    db.commit()


def last_used_at(db, user):
    db.expire_all()
    return db.scalar(select(ApiToken.last_used_at).where(ApiToken.user_id == user.id))


def test_revoking_through_the_api_is_at_once_despite_the_cache(app_with_cache, user):
    client = app_with_cache(60).test_client()
    assert client.get(ME, headers=user.headers).status_code == 200  # cached now
    token_id = client.get("/api/v1/auth/tokens", headers=user.headers).json["data"][0]["id"]
    r = client.delete(f"/api/v1/auth/tokens/{token_id}", headers=user.headers)
    assert r.status_code == 204
    r = client.get(ME, headers=user.headers)
    assert r.status_code == 401 and "revoked" in r.json["message"]


def test_token_revoked_by_another_process_is_rejected_once_the_cache_expires(
    app_with_cache, user, db
):
    ttl = 0.5
    client = app_with_cache(ttl).test_client()
    assert client.get(ME, headers=user.headers).status_code == 200
    revoke_in_database(db, user)
    # Within the bound the cached verification still stands...
    assert client.get(ME, headers=user.headers).status_code == 200
    time.sleep(ttl + 0.05)
    # ...and not beyond it.
    assert client.get(ME, headers=user.headers).status_code == 401


def test_expiry_is_checked_on_every_request_even_when_cached(app_with_cache, user, db, monkeypatch):
    db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id)
        .values(expires_at=utcnow() + timedelta(minutes=10))
    )
    db.commit()
    client = app_with_cache(3600).test_client()
    assert client.get(ME, headers=user.headers).status_code == 200  # cached with its expiry
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    r = client.get(ME, headers=user.headers)
    assert r.status_code == 401 and "expired" in r.json["message"]


def test_zero_seconds_disables_the_cache(app_with_cache, user, db):
    app = app_with_cache(0)
    client = app.test_client()
    assert client.get(ME, headers=user.headers).status_code == 200
    assert len(app.extensions["roomcast"].token_cache) == 0
    revoke_in_database(db, user)
    assert client.get(ME, headers=user.headers).status_code == 401


def test_last_used_at_is_still_written_for_cached_tokens(app_with_cache, user, db, monkeypatch):
    client = app_with_cache(3600).test_client()
    assert last_used_at(db, user) is None
    assert client.get(ME, headers=user.headers).status_code == 200
    first = last_used_at(db, user)
    assert first is not None
    # Within the resolution (a minute) a cached token is not written again...
    assert client.get(ME, headers=user.headers).status_code == 200
    assert last_used_at(db, user) == first
    # ...past it, it is, though it comes from the cache.
    monkeypatch.setattr(auth, "LAST_USED_RESOLUTION", timedelta(0))
    assert client.get(ME, headers=user.headers).status_code == 200
    assert last_used_at(db, user) > first


def _token(token_id: int) -> VerifiedToken:
    return VerifiedToken(token_id=token_id, user_id=1, expires_at=None, last_used_at=None)


def test_cache_entries_live_for_the_ttl_and_can_be_dropped():
    now = [100.0]
    cache = TokenCache(2, clock=lambda: now[0])
    cache.put("a", _token(1))
    cache.put("b", _token(2))
    assert cache.get("a").token_id == 1
    cache.discard("a")
    assert cache.get("a") is None
    now[0] += 2
    assert cache.get("b") is None and len(cache) == 0


def test_cache_is_bounded_oldest_first():
    cache = TokenCache(60, max_entries=3)
    for i in range(5):
        cache.put(str(i), _token(i))
    assert len(cache) == 3
    assert [cache.get(str(i)) is not None for i in range(5)] == [False, False, True, True, True]
    cache.put("2", _token(2))  # refreshed: now the newest
    cache.put("5", _token(5))
    assert cache.get("2") is not None and cache.get("3") is None


def test_cache_under_concurrent_use_stays_consistent_and_bounded():
    cache = TokenCache(60, max_entries=50)
    errors = []

    def work(offset: int) -> None:
        try:
            for i in range(2000):
                key = str((offset + i) % 200)
                cache.put(key, _token(i))
                token = cache.get(key)
                assert token is None or isinstance(token, VerifiedToken)
                cache.discard(str(i % 200))
        except Exception as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 37,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(cache) <= 50
