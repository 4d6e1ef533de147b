"""Prometheus metrics: served only with the metrics token, and moved by a real turn."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import post_turn, start_session, wait_done

TOKEN = "metrics-test-token"


@pytest.fixture(scope="module")
def metrics_app(settings, migrated):
    from api import create_app

    return create_app(replace(settings, metrics_token=TOKEN), {"TESTING": True})


def scraped(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_token_and_are_off_without_it(metrics_app, client, user):
    own = metrics_app.test_client()
    assert own.get("/metrics").status_code == 401
    assert own.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    # A user's API token is not the metrics token.
    assert own.get("/metrics", headers=user.headers).status_code == 401
    # The suite's app has no metrics token: no metrics at all.
    off = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert off.status_code == 404 and off.json["code"] == "not_found"
    # Not in the client API's document.
    assert "/metrics" not in client.get("/api/v1/docs/openapi.json").json["paths"]


def test_requests_are_counted_by_route_and_status(metrics_app, user):
    client = metrics_app.test_client()
    before = scraped(client)
    route = "/api/v1/agents/<int:agent_id>"
    for _ in range(3):
        assert client.get("/api/v1/agents/999999999", headers=user.headers).status_code == 404
    assert client.get("/api/v1/agents", headers=user.headers).status_code == 200
    assert client.get("/no/such/path").status_code == 404
    after = scraped(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    counts = "roomcast_http_requests_total"
    assert moved(counts, method="GET", route=route, status="404") == 3
    assert moved(counts, method="GET", route="/api/v1/agents", status="200") == 1
    assert moved(counts, method="GET", route="<unmatched>", status="404") == 1
    latency = "roomcast_http_request_duration_seconds_count"
    assert moved(latency, method="GET", route=route) == 3


def test_queue_state_is_read_at_scrape(metrics_app, held_client, make_user, make_agent, engine):
    from tests.api_world import cancel_unfinished

    user = make_user()
    session = start_session(held_client, user, agent=make_agent(user))
    client = metrics_app.test_client()
    before = scraped(client)
    assert post_turn(held_client, user, session["id"]).status_code == 202
    after = scraped(client)
    queued = "roomcast_turns_unfinished"
    assert value(after, queued, status="queued") == value(before, queued, status="queued") + 1
    assert ("roomcast_oldest_queued_turn_age_seconds", ()) in after
    assert ("roomcast_outbox_backlog", ()) in after
    cancel_unfinished(engine, [user.id])


def test_a_turn_moves_the_turn_and_llm_counts(metrics_app, user, make_agent, celery_worker):
    client = metrics_app.test_client()
    session = start_session(client, user, agent=make_agent(user))
    before = scraped(client)
    turn = post_turn(client, user, session["id"], "count me").json
    assert wait_done(client, user, turn["id"])["status"] == "completed"
    after = scraped(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("roomcast_turns_ended_total", status="completed", stop_reason="completed") == 1
    assert moved("roomcast_turn_queue_wait_seconds_count") == 1
    assert moved("roomcast_turn_duration_seconds_count") == 1
    llm = dict(provider="instant", model="instant")
    assert moved("roomcast_llm_calls_total", outcome="ok", **llm) == 1
    assert moved("roomcast_llm_call_duration_seconds_count", **llm) == 1
    assert moved("roomcast_llm_tokens_total", kind="completion", **llm) > 0
