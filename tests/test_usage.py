"""Usage reporting: GET /usage (totals, groups, window) and GET /turns/{id}/usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from models import ChatSession, Turn, UsageRecord, utcnow
from models.aggregates import exact_cost_sum, utc_date

from .conftest import is_postgres

USAGE = "/api/v1/usage"


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


def record(owner, when, agent=None, room=None, tokens=(0, 0), cost="0", **fields):
    """A usage record of ``owner``; provider and model default to openai's gpt-4o-mini."""
    fields.setdefault("provider", "openai")
    fields.setdefault("model", "gpt-4o-mini")
    prompt, completion = tokens
    return UsageRecord(
        user_id=owner.id,
        agent_id=agent.id if agent is not None else None,
        room_id=room.id if room is not None else None,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost=Decimal(cost),
        created_at=when,
        **fields,
    )


def sums(calls: int, prompt: int, completion: int, cost: str, **key) -> dict:
    return {
        **key,
        "calls": calls,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": cost,
    }


NOTHING = sums(0, 0, 0, "0.00000000")


def usage(client, user, **params) -> dict:
    r = client.get(USAGE, query_string=params, headers=user.headers)
    assert r.status_code == 200, r.json
    return r.json


@pytest.fixture
def seeded(client, db, make_user, make_agent, make_room):
    """Five calls of one user over three days, and another user's calls on the same days.

    The agent "critic" and the room "studio" are deleted afterwards.
    """
    me, other = make_user(), make_user()
    writer, critic = make_agent(me, name="writer"), make_agent(me, name="critic")
    studio = make_room(me, [writer, critic], name="studio")
    lab = make_room(me, [critic], name="lab")
    theirs = make_agent(other, name="writer")
    their_room = make_room(other, [theirs], name="studio")
    db.add_all(
        [
            record(me, at(1), writer, None, (100, 50), "0.00012345"),  # a standalone session
            record(me, at(1, 23, 59, 59, 999999), writer, studio, (10, 5), "0.10000001"),
            record(me, at(2, 12), critic, studio, (7, 3), "0", provider="local", model="smollm2"),
            record(me, at(3), critic, lab, (1000, 2000), "1.23456789", model="gpt-4o"),
            record(me, at(3, 5), None, lab, (1, 1), "0.00000001"),  # a supervisor's selection
            *(record(other, at(d), theirs, their_room, (10**6, 10**6), "99") for d in (1, 2, 3)),
        ]
    )
    db.commit()
    assert client.delete(f"/api/v1/agents/{critic.id}", headers=me.headers).status_code == 204
    assert client.delete(f"/api/v1/rooms/{studio.id}", headers=me.headers).status_code == 204
    return SimpleNamespace(me=me, other=other, writer=writer, critic=critic, studio=studio, lab=lab)


ALL_OF_NOVEMBER = {"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"}


# GET /usage


def test_totals_count_only_the_callers_usage_and_have_no_groups(client, seeded):
    report = usage(client, seeded.me)
    assert report == {
        "group_by": None,
        "since": None,
        "until": None,
        "totals": sums(5, 1118, 2059, "1.33469136"),
        "groups": [],
        "truncated": False,
    }
    assert usage(client, seeded.other)["totals"] == sums(3, 3 * 10**6, 3 * 10**6, "297.00000000")


def test_group_by_agent_keeps_deleted_agents_and_calls_for_no_agent(client, seeded):
    report = usage(client, seeded.me, group_by="agent")
    assert report["groups"] == [
        sums(2, 1007, 2003, "1.23456789", agent_id=seeded.critic.id, name="critic", deleted=True),
        sums(2, 110, 55, "0.10012346", agent_id=seeded.writer.id, name="writer", deleted=False),
        sums(1, 1, 1, "0.00000001", agent_id=None, name=None, deleted=False),
    ]
    assert report["totals"] == sums(5, 1118, 2059, "1.33469136")


def test_group_by_room_puts_standalone_usage_under_a_null_room(client, seeded):
    assert usage(client, seeded.me, group_by="room")["groups"] == [
        sums(2, 1001, 2001, "1.23456790", room_id=seeded.lab.id, name="lab", deleted=False),
        sums(2, 17, 8, "0.10000001", room_id=seeded.studio.id, name="studio", deleted=True),
        sums(1, 100, 50, "0.00012345", room_id=None, name=None, deleted=False),
    ]


def test_group_by_model(client, seeded):
    assert usage(client, seeded.me, group_by="model")["groups"] == [
        sums(1, 1000, 2000, "1.23456789", provider="openai", model="gpt-4o"),
        sums(3, 111, 56, "0.10012347", provider="openai", model="gpt-4o-mini"),
        sums(1, 7, 3, "0.00000000", provider="local", model="smollm2"),
    ]


def test_group_by_day_splits_at_utc_midnight(client, seeded):
    report = usage(client, seeded.me, group_by="day", **ALL_OF_NOVEMBER)
    assert report["groups"] == [
        sums(2, 110, 55, "0.10012346", day="2026-11-01"),
        sums(1, 7, 3, "0.00000000", day="2026-11-02"),
        sums(2, 1001, 2001, "1.23456790", day="2026-11-03"),
    ]
    assert (report["since"], report["until"]) == (
        "2026-11-01T00:00:00+00:00",
        "2026-12-01T00:00:00+00:00",
    )


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        # since is inclusive, until exclusive, to the microsecond.
        (
            {"since": "2026-11-01T23:59:59.999999Z", "until": "2026-11-03T00:00:00Z"},
            sums(2, 17, 8, "0.10000001"),
        ),
        (
            {"since": "2026-11-02T00:00:00Z", "until": "2026-11-03T00:00:00.000001Z"},
            sums(2, 1007, 2003, "1.23456789"),
        ),
        # Without an offset a datetime is UTC; an offset is honoured; a bare date is midnight UTC.
        (
            {"since": "2026-11-01T23:59:59.999999", "until": "2026-11-02"},
            sums(1, 10, 5, "0.10000001"),
        ),
        (
            {"since": "2026-11-02T00:59:59.999999+01:00", "until": "2026-11-02T07:00:00+05:00"},
            sums(1, 10, 5, "0.10000001"),
        ),
        ({"since": "2026-11-03T00:00:00.000001Z"}, sums(1, 1, 1, "0.00000001")),
        ({"until": "2026-11-01T00:00:00Z"}, NOTHING),
    ],
)
def test_the_window_includes_since_and_excludes_until(client, seeded, window, expected):
    report = usage(client, seeded.me, **window)
    assert report["totals"] == expected
    for field in ("since", "until"):
        if field in window:
            assert report[field].endswith("+00:00")


def test_a_user_without_usage_gets_zeros_and_no_groups(client, user):
    for group_by in (None, "agent", "room", "model", "day"):
        report = usage(client, user, **({"group_by": group_by} if group_by else {}))
        assert (report["totals"], report["groups"], report["truncated"]) == (NOTHING, [], False)


def test_group_by_day_defaults_to_the_last_30_days(client, db, user):
    now = utcnow()
    db.add_all(
        [
            record(user, now - timedelta(days=31), cost="1"),
            record(user, now - timedelta(hours=1), tokens=(3, 4), cost="0.5"),
        ]
    )
    db.commit()
    report = usage(client, user, group_by="day")
    assert report["totals"] == sums(1, 3, 4, "0.50000000")
    assert [g["day"] for g in report["groups"]] == [(now - timedelta(hours=1)).date().isoformat()]
    since = datetime.fromisoformat(report["since"])
    assert timedelta(0) <= since - (now - timedelta(days=30)) < timedelta(minutes=1)
    assert report["until"] is None
    # Ungrouped, the same request counts from the beginning.
    assert usage(client, user)["totals"] == sums(2, 3, 4, "1.50000000")
    # Near the first representable day, the window starts at the beginning.
    assert usage(client, user, group_by="day", until="0001-01-05")["since"] is None


def test_groups_are_bounded_and_the_smallest_left_out(client, db, user):
    db.add_all(
        record(user, at(1), model=f"m{i:04}", cost=f"0.0000{i:04}", tokens=(1, 0))
        for i in range(1, 1002)
    )
    db.commit()
    report = usage(client, user, group_by="model")
    assert report["truncated"] is True
    assert len(report["groups"]) == 1000
    assert report["groups"][0]["model"] == "m1001" and report["groups"][-1]["model"] == "m0002"
    assert report["totals"] == sums(1001, 1001, 0, "0.00501501")  # 1 + 2 + ... + 1001 units


def test_many_tiny_costs_sum_exactly(client, db, make_user):
    tiny, huge = make_user(), make_user()
    db.add_all(record(tiny, at(1), cost="0.00000001") for _ in range(1000))
    # A large cost first: summed as floats, each tiny one after it would be rounded off.
    db.add(record(huge, at(1), cost="10000000"))
    db.flush()
    db.add_all(record(huge, at(1), cost="0.00000001") for _ in range(1000))
    db.commit()
    assert usage(client, tiny)["totals"]["cost"] == "0.00001000"
    assert usage(client, tiny, group_by="day", **ALL_OF_NOVEMBER)["groups"][0]["cost"] == (
        "0.00001000"
    )
    assert usage(client, huge)["totals"]["cost"] == "10000000.00001000"
    assert usage(client, huge, group_by="model")["groups"][0]["cost"] == "10000000.00001000"
    assert db.scalar(
        select(exact_cost_sum(UsageRecord.cost)).where(UsageRecord.user_id == huge.id)
    ) == Decimal("10000000.00001000")


def test_utc_date_ignores_the_connections_time_zone(db, user):
    row = record(user, at(1, 23, 59, 59, 999999))
    db.add(row)
    db.commit()
    if is_postgres():
        db.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))  # UTC+14
    assert db.scalar(select(utc_date(UsageRecord.created_at)).where(UsageRecord.id == row.id)) == (
        at(1).date()
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"group_by": ""}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
        ({"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T00:00:00+00:00"}, "until"),
        ({"since": "9999-12-31T23:00:00-05:00"}, "since"),
        ({"group_by": "day", "since": "2025-11-01", "until": "2026-11-02T00:00:01"}, "since"),
        ({"agent_id": "1"}, "agent_id"),
        ({"limit": "10"}, "limit"),
    ],
)
def test_invalid_arguments_are_422_with_field_errors(client, user, params, field):
    r = client.get(USAGE, query_string=params, headers=user.headers)
    assert r.status_code == 422, r.json
    assert r.json["code"] == "validation_error" and set(r.json["errors"]) == {field}


def test_a_year_of_days_is_allowed(client, user):
    window = {"since": "2025-11-01", "until": "2026-11-02"}  # 366 days
    assert usage(client, user, group_by="day", **window)["groups"] == []


def test_usage_needs_a_token(client):
    assert client.get(USAGE).status_code == 401


# GET /turns/{id}/usage


@pytest.fixture
def turn(db, seeded):
    """A finished room turn of ``seeded.me`` in the lab, with a retried call and a selection."""
    me, critic, writer, lab = seeded.me, seeded.critic, seeded.writer, seeded.lab
    session = ChatSession(user_id=me.id, room_id=lab.id)
    db.add(session)
    db.flush()
    turn = Turn(session_id=session.id, user_id=me.id, status="completed")
    other_turn = Turn(session_id=session.id, user_id=me.id, status="completed")
    db.add_all([turn, other_turn])
    db.flush()
    call = partial(record, me, session_id=session.id, turn_id=turn.id, latency_ms=20)
    db.add_all(
        [
            call(at(4, 0, 0, 3), None, lab, step=2, attempt=1),  # the selector: no agent, free
            call(at(4, 0, 0, 1), critic, lab, (20, 0), "0.002", step=1, attempt=1),
            call(at(4, 0, 0, 2), critic, lab, (20, 10), "0.003", step=1, attempt=2),  # a retry
            call(at(4, 0, 0, 4), writer, lab, (50, 25), "0.0075", step=3, attempt=1),
            record(me, at(4, 1), writer, lab, (9, 9), "9", turn_id=other_turn.id),
        ]
    )
    db.commit()
    return turn


def test_turn_usage_lists_each_call_with_totals_and_per_agent_sums(client, seeded, turn):
    r = client.get(f"/api/v1/turns/{turn.id}/usage", headers=seeded.me.headers)
    assert r.status_code == 200, r.json
    assert r.json["turn_id"] == turn.id
    assert r.json["totals"] == sums(4, 90, 35, "0.01250000")
    assert r.json["by_agent"] == [
        sums(1, 50, 25, "0.00750000", agent_id=seeded.writer.id, name="writer", deleted=False),
        sums(2, 40, 10, "0.00500000", agent_id=seeded.critic.id, name="critic", deleted=True),
        sums(1, 0, 0, "0.00000000", agent_id=None, name=None, deleted=False),
    ]
    records = r.json["records"]
    assert [(c["step"], c["attempt"], c["agent_id"]) for c in records] == [
        (1, 1, seeded.critic.id),
        (1, 2, seeded.critic.id),
        (2, 1, None),
        (3, 1, seeded.writer.id),
    ]
    assert records[1] == {
        "id": records[1]["id"],
        "step": 1,
        "attempt": 2,
        "agent_id": seeded.critic.id,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 30,
        "latency_ms": 20,
        "cost": "0.00300000",
        "created_at": "2026-11-04T00:00:02+00:00",
    }


def test_turn_usage_of_a_turn_without_calls_is_empty(client, db, user, make_agent):
    session = ChatSession(user_id=user.id, agent_id=make_agent(user).id)
    db.add(session)
    db.flush()
    turn = Turn(session_id=session.id, user_id=user.id, status="cancelled")
    db.add(turn)
    db.commit()
    r = client.get(f"/api/v1/turns/{turn.id}/usage", headers=user.headers)
    assert r.status_code == 200
    assert r.json == {"turn_id": turn.id, "totals": NOTHING, "by_agent": [], "records": []}


def test_another_users_or_a_missing_turn_is_404(client, db, seeded, turn):
    url = f"/api/v1/turns/{turn.id}/usage"
    r = client.get(url, headers=seeded.other.headers)
    assert r.status_code == 404 and r.json["code"] == "not_found"
    for missing in (10**9, 2**63):
        assert (
            client.get(f"/api/v1/turns/{missing}/usage", headers=seeded.me.headers).status_code
            == 404
        )
    assert client.get(url).status_code == 401
    # A deleted session's turns are gone from the API; their usage still counts in /usage.
    db.get(ChatSession, turn.session_id).deleted_at = utcnow()
    db.commit()
    assert client.get(url, headers=seeded.me.headers).status_code == 404
    assert usage(client, seeded.me, since="2026-11-04")["totals"]["calls"] == 5


# OpenAPI


def test_openapi_documents_both_endpoints_with_examples(client):
    spec = client.get("/api/v1/docs/openapi.json").json
    report = spec["paths"]["/api/v1/usage"]["get"]
    turn_usage = spec["paths"]["/api/v1/turns/{turn_id}/usage"]["get"]
    assert report["summary"] and turn_usage["summary"]
    parameters = {p["name"]: p for p in report["parameters"]}
    assert set(parameters) == {"group_by", "since", "until"}
    assert parameters["group_by"]["schema"]["enum"] == ["agent", "room", "model", "day"]
    assert report["responses"]["200"]["content"]["application/json"]["example"]["groups"]
    for operation, status in ((report, "422"), (turn_usage, "404")):
        error = operation["responses"][status]["content"]["application/json"]
        assert error["schema"] == {"$ref": "#/components/schemas/Error"}
        assert error["example"]["status"] == int(status)
    schemas = spec["components"]["schemas"]
    for name in ("UsageSums", "AgentUsage", "UsageGroup", "UsageRecord", "UsageReport"):
        for field, prop in schemas[name]["properties"].items():
            assert "example" in prop or "$ref" in prop or "items" in prop, (name, field)
