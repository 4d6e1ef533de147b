"""Usage sums for one user, computed by the database (GROUP BY), exact to 10**-8 USD."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from models import Agent, Room, UsageRecord
from models.aggregates import exact_cost_sum, utc_date

GROUP_BY = ("agent", "room", "model", "day")
SUM_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cost")

# The columns each grouping is keyed by, labelled as the report names them.
_KEYS: dict[str, tuple[ColumnElement, ...]] = {
    "agent": (UsageRecord.agent_id.label("agent_id"),),
    "room": (UsageRecord.room_id.label("room_id"),),
    "model": (UsageRecord.provider.label("provider"), UsageRecord.model.label("model")),
    "day": (utc_date(UsageRecord.created_at).label("day"),),
}
# Groupings whose key is a row that has a name; deleted rows keep theirs.
_NAMED = {"agent": Agent, "room": Room}


def _sums() -> tuple[ColumnElement, ...]:
    return (
        func.count().label("calls"),
        *(
            func.coalesce(func.sum(getattr(UsageRecord, field)), 0).label(field)
            for field in ("prompt_tokens", "completion_tokens", "total_tokens")
        ),
        exact_cost_sum(UsageRecord.cost).label("cost"),
    )


def usage_totals(db: Session, where: list[ColumnElement[bool]]) -> dict[str, Any]:
    """Call count, token sums and cost of the usage records matching ``where``."""
    return dict(db.execute(select(*_sums()).where(*where)).one()._mapping)


def usage_groups(
    db: Session, where: list[ColumnElement[bool]], group_by: str, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` groups of the records matching ``where``, with their key fields and sums.

    Days come in date order; agents, rooms and models in descending cost (ties by key), so a
    cut-off drops the smallest. Agent and room groups carry the row's ``name`` and ``deleted``;
    calls made for no agent or room form one group whose id and name are null.
    """
    keys = _KEYS[group_by]
    sums = select(*keys, *_sums()).where(*where).group_by(*keys).subquery()
    key_columns = [sums.c[key.name] for key in keys]
    stmt = select(sums)
    if (named := _NAMED.get(group_by)) is not None:
        stmt = select(sums, named.name, named.deleted_at.is_not(None).label("deleted")).outerjoin(
            named, named.id == key_columns[0]
        )
    if group_by == "day":
        order = key_columns
    else:
        order = [sums.c.cost.desc(), *(column.asc().nulls_first() for column in key_columns)]
    rows = db.execute(stmt.order_by(*order).limit(limit)).mappings()
    return [dict(row) for row in rows]
