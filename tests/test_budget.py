from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from models import UsageRecord, User
from models.settings import Settings
from tests.helpers import post_turn, start_session, wait_done
from worker.budget import _limits, period_start


@pytest.mark.usefixtures("celery_worker")
def test_spent_budget_fails_the_turn_before_any_provider_call(client, user, make_agent, db):
    db.get(User, user.id).settings = {"budget": {"tokens": 1, "period": "day"}}
    db.commit()
    session = start_session(client, user, agent=make_agent(user))
    first = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    assert first["status"] == "completed"  # nothing was spent before it
    rows_before = db.scalar(
        select(func.count()).select_from(UsageRecord).where(UsageRecord.user_id == user.id)
    )

    second = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])
    assert second["status"] == "failed" and second["stop_reason"] == "budget_exceeded"
    assert (
        second["error"]["code"] == "budget_exceeded"
        and "token budget" in second["error"]["message"]
    )
    assert second["message_ids"] == [] and second["usage"]["total_tokens"] == 0
    rows_after = db.scalar(
        select(func.count()).select_from(UsageRecord).where(UsageRecord.user_id == user.id)
    )
    assert rows_after == rows_before


@pytest.mark.usefixtures("celery_worker")
def test_budget_spent_mid_turn_keeps_the_steps_already_written(
    client, user, make_agent, make_room, db
):
    # The instant provider reports more than 5 tokens a call: the first speaker spends it all.
    db.get(User, user.id).settings = {"budget": {"tokens": 5, "period": "day"}}
    db.commit()
    room = make_room(user, [make_agent(user, "ann"), make_agent(user, "bob")], mode="sequential")
    session = start_session(client, user, room=room)
    turn = wait_done(client, user, post_turn(client, user, session["id"]).json["id"])

    assert turn["status"] == "failed" and turn["stop_reason"] == "budget_exceeded"
    assert len(turn["message_ids"]) == 1  # ann's reply, recorded with its usage
    assert [(s["name"], s["status"]) for s in turn["progress"]["speakers"]] == [
        ("ann", "done"),
        ("bob", "pending"),
    ]
    assert turn["usage"]["total_tokens"] > 5
    rows = db.scalars(select(UsageRecord).where(UsageRecord.turn_id == turn["id"])).all()
    assert [(r.step, r.total_tokens) for r in rows] == [(1, turn["usage"]["total_tokens"])]


def test_user_settings_override_server_limits():
    settings = Settings.from_env({"ROOMCAST_BUDGET_TOKENS": "1000", "ROOMCAST_BUDGET_COST": "2.5"})
    assert _limits(settings, {}) == (1000, Decimal("2.5"), "month")
    own = {"budget": {"tokens": 10, "cost": "0.10", "period": "day"}}
    assert _limits(settings, own) == (10, Decimal("0.10"), "day")
    assert _limits(settings, {"budget": {"cost": "lots", "period": "year"}}) == (
        1000,
        Decimal("2.5"),
        "month",
    )


def test_period_start():
    now = datetime(2026, 11, 25, 13, 14, 15, tzinfo=UTC)
    assert period_start("day", now) == datetime(2026, 11, 25, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 11, 1, tzinfo=UTC)
