"""Per-user spending limits, checked before every provider call.

The limits come from the server (ROOMCAST_BUDGET_*) unless the user's own settings hold a
``budget`` object (``{"tokens": N, "cost": "1.50", "period": "day"|"month"}``, any subset).
Spending is what the user's usage records add up to since the start of the current period
(UTC calendar day or month).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import UsageRecord, utcnow
from models.settings import BUDGET_PERIODS, Settings


class BudgetExceeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def period_start(period: str, now: datetime) -> datetime:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start.replace(day=1) if period == "month" else start


def _limits(settings: Settings, user_settings: dict) -> tuple[int | None, Decimal | None, str]:
    tokens, cost, period = settings.budget_tokens, settings.budget_cost, settings.budget_period
    own = user_settings.get("budget") if isinstance(user_settings, dict) else None
    if isinstance(own, dict):
        if isinstance(own.get("tokens"), int) and own["tokens"] >= 0:
            tokens = own["tokens"]
        if own.get("cost") is not None:
            with contextlib.suppress(InvalidOperation):  # a malformed value keeps the default
                cost = Decimal(str(own["cost"]))
        if own.get("period") in BUDGET_PERIODS:
            period = own["period"]
    return tokens, cost, period


def check_budget(s: Session, user_id: int, settings: Settings, user_settings: dict | None) -> None:
    """Raise BudgetExceeded when the user has spent their budget for the current period.

    ``user_settings`` are the user's own settings (read with the turn, once per attempt).
    """
    tokens, cost, period = _limits(settings, user_settings or {})
    if tokens is None and cost is None:
        return
    since = period_start(period, utcnow())
    used_tokens, used_cost = s.execute(
        select(
            func.coalesce(func.sum(UsageRecord.total_tokens), 0),
            func.coalesce(func.sum(UsageRecord.cost), 0),
        ).where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
    ).one()
    # SQLite sums NUMERIC as a float; go through str for an exact-enough Decimal.
    used_cost = Decimal(str(used_cost))
    if tokens is not None and used_tokens >= tokens:
        raise BudgetExceeded(
            f"The {period}ly token budget of {tokens} is spent ({used_tokens} used since "
            f"{since:%Y-%m-%d})."
        )
    if cost is not None and used_cost >= cost:
        raise BudgetExceeded(
            f"The {period}ly cost budget of {cost} is spent ({used_cost} used since "
            f"{since:%Y-%m-%d})."
        )
