"""Usage report arguments and answers: sums of the caller's usage records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import marshmallow as ma

from models import utcnow
from models.schema_fields import TIMESTAMP_EXAMPLE, DecimalString

from ..usage_report import GROUP_BY
from .base import ReadSchema, StrictSchema
from .storable import Schema

# group_by=day answers one group per day, so its window is bounded; without `since` it covers
# the last DEFAULT_DAY_WINDOW.
MAX_DAY_WINDOW = timedelta(days=366)
DEFAULT_DAY_WINDOW = timedelta(days=30)
# Agents, rooms and models are bounded by what the caller owns and uses; this bounds the answer.
MAX_GROUPS = 1000

COST_EXAMPLE = {"example": "0.01234500"}


class UtcDateTime(ma.fields.AwareDateTime):
    """An ISO 8601 date or datetime, taken as UTC when it has no offset, answered in UTC."""

    default_error_messages = {"out_of_range": "Not a representable UTC date and time."}

    def __init__(self, **kwargs) -> None:
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        try:
            return super()._deserialize(value, attr, data, **kwargs).astimezone(UTC)
        except OverflowError:  # an offset pushes it past year 1 or 9999
            raise self.make_error("out_of_range") from None


class UsageArgsSchema(StrictSchema):
    group_by = ma.fields.String(
        validate=ma.validate.OneOf(GROUP_BY),
        metadata={
            "description": "Split the totals into groups: per agent, per room (standalone "
            "sessions in the room_id null group), per provider and model, or per UTC day. "
            "Without it, groups is empty.",
            "example": "agent",
        },
    )
    since = UtcDateTime(
        metadata={
            "description": "Count usage from this instant on (inclusive). ISO 8601; without an "
            "offset it is UTC (write `Z`, or encode `+` as `%2B`); a bare date means its "
            f"midnight UTC. Default: from the beginning, or {DEFAULT_DAY_WINDOW.days} days "
            "before `until` with group_by=day.",
            "example": "2026-11-01T00:00:00Z",
        }
    )
    until = UtcDateTime(
        metadata={
            "description": "Count usage before this instant (exclusive); later than `since`. "
            "Default: up to now.",
            "example": "2026-12-01T00:00:00Z",
        }
    )

    @ma.validates_schema
    def check_window(self, data, **kwargs) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            raise ma.ValidationError("Must be later than since.", "until")
        if (
            data.get("group_by") == "day"
            and since is not None
            and (until or utcnow()) - since > MAX_DAY_WINDOW
        ):
            raise ma.ValidationError(
                f"With group_by=day the window may span at most {MAX_DAY_WINDOW.days} days.",
                "since",
            )

    @ma.post_load
    def default_day_window(self, data, **kwargs) -> dict:
        """group_by=day without `since` covers a bounded span of days before `until`."""
        if data.get("group_by") == "day" and data.get("since") is None:
            until = data.get("until") or utcnow()
            if until - datetime.min.replace(tzinfo=UTC) > DEFAULT_DAY_WINDOW:
                data["since"] = until - DEFAULT_DAY_WINDOW
        return data


class UsageSumsSchema(Schema):
    calls = ma.fields.Integer(
        metadata={"description": "LLM calls (each billed provider retry counts).", "example": 3}
    )
    prompt_tokens = ma.fields.Integer(metadata={"example": 1200})
    completion_tokens = ma.fields.Integer(metadata={"example": 345})
    total_tokens = ma.fields.Integer(metadata={"example": 1545})
    cost = DecimalString(
        metadata={"description": "USD, an exact decimal with 8 places.", **COST_EXAMPLE},
    )


class AgentUsageSchema(UsageSumsSchema):
    agent_id = ma.fields.Integer(
        allow_none=True,
        metadata={
            "description": "The agent; null for calls made for no agent (a supervisor's "
            "speaker selection).",
            "example": 7,
        },
    )
    name = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "The agent's or room's name, also once deleted; null for the group "
            "whose id is null.",
            "example": "writer",
        },
    )
    deleted = ma.fields.Boolean(
        metadata={"description": "The agent or room has been deleted since.", "example": False}
    )


class UsageGroupSchema(AgentUsageSchema):
    """One group: its key fields (only those of the chosen group_by) and its sums."""

    room_id = ma.fields.Integer(
        allow_none=True,
        metadata={"description": "group_by=room; null for standalone sessions.", "example": 3},
    )
    provider = ma.fields.String(metadata={"description": "group_by=model.", "example": "openai"})
    model = ma.fields.String(metadata={"description": "group_by=model.", "example": "gpt-4o-mini"})
    day = ma.fields.Date(metadata={"description": "group_by=day (UTC).", "example": "2026-11-25"})


class UsageReportSchema(Schema):
    group_by = ma.fields.String(allow_none=True, metadata={"example": "agent"})
    since = ma.fields.DateTime(
        allow_none=True,
        metadata={"description": "The window's start (null: the beginning).", **TIMESTAMP_EXAMPLE},
    )
    until = ma.fields.DateTime(
        allow_none=True,
        metadata={"description": "The window's end, exclusive (null: now).", **TIMESTAMP_EXAMPLE},
    )
    totals = ma.fields.Nested(UsageSumsSchema)
    groups = ma.fields.List(
        ma.fields.Nested(UsageGroupSchema),
        metadata={"description": f"At most {MAX_GROUPS}; empty without group_by."},
    )
    truncated = ma.fields.Boolean(
        metadata={
            "description": f"More than {MAX_GROUPS} groups: the smallest by cost are left out "
            "(totals still count them).",
            "example": False,
        }
    )


class UsageRecordSchema(ReadSchema):
    step = ma.fields.Integer(
        metadata={"description": "The turn's step the call was made for.", "example": 1}
    )
    attempt = ma.fields.Integer(
        metadata={"description": "Which attempt at this step; each one is recorded.", "example": 1}
    )
    agent_id = ma.fields.Integer(allow_none=True, metadata={"example": 7})
    provider = ma.fields.String(metadata={"example": "openai"})
    model = ma.fields.String(metadata={"example": "gpt-4o-mini"})
    prompt_tokens = ma.fields.Integer(metadata={"example": 1200})
    completion_tokens = ma.fields.Integer(metadata={"example": 345})
    total_tokens = ma.fields.Integer(metadata={"example": 1545})
    latency_ms = ma.fields.Integer(metadata={"example": 850})
    cost = DecimalString(metadata={"description": "USD.", **COST_EXAMPLE})


class TurnUsageSchema(Schema):
    turn_id = ma.fields.Integer(metadata={"example": 42})
    totals = ma.fields.Nested(UsageSumsSchema)
    by_agent = ma.fields.List(
        ma.fields.Nested(AgentUsageSchema),
        metadata={"description": "Per-agent sums, largest cost first."},
    )
    records = ma.fields.List(
        ma.fields.Nested(UsageRecordSchema),
        metadata={"description": "One per LLM call, by step and attempt."},
    )
