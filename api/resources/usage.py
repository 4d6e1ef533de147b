"""Usage and cost: the caller's totals over a window, grouped, and one turn's LLM calls."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from models import UsageRecord

from ..auth import current_user_id
from ..errors import error_response
from ..schemas.usage import MAX_GROUPS, TurnUsageSchema, UsageArgsSchema, UsageReportSchema
from ..state import get_db
from ..usage_report import usage_groups, usage_totals
from .turns import _get_turn_or_404

blp = Blueprint(
    "usage",
    __name__,
    url_prefix="/api/v1",
    description="Token usage and cost of your LLM calls, summed by the database.",
)

INVALID = error_response(
    blp,
    422,
    "Invalid arguments: an unknown group_by or argument, a malformed date, `until` not later "
    "than `since`, or a group_by=day window over 366 days.",
    errors={"group_by": ["Must be one of: agent, room, model, day."]},
)
NOT_FOUND = error_response(
    blp, 404, "No such turn (or not yours).", {"not_found": "Turn 42 not found."}
)


@blp.route("/usage")
class Usage(MethodView):
    @blp.arguments(UsageArgsSchema, location="query", unknown=ma.RAISE)
    @blp.response(
        200,
        UsageReportSchema,
        example={
            "group_by": "agent",
            "since": "2026-11-01T00:00:00+00:00",
            "until": None,
            "totals": {
                "calls": 5,
                "prompt_tokens": 5200,
                "completion_tokens": 910,
                "total_tokens": 6110,
                "cost": "0.01902000",
            },
            "groups": [
                {
                    "agent_id": 7,
                    "name": "writer",
                    "deleted": False,
                    "calls": 3,
                    "prompt_tokens": 4000,
                    "completion_tokens": 700,
                    "total_tokens": 4700,
                    "cost": "0.01500000",
                },
                {
                    "agent_id": 9,
                    "name": "critic",
                    "deleted": True,
                    "calls": 2,
                    "prompt_tokens": 1200,
                    "completion_tokens": 210,
                    "total_tokens": 1410,
                    "cost": "0.00402000",
                },
            ],
            "truncated": False,
        },
    )
    @INVALID
    def get(self, args):
        """My usage and cost, totalled and optionally grouped

        Counts only your own calls in `[since, until)`, also those of agents, rooms and
        sessions deleted since. Costs are exact decimal strings in USD.
        """
        since, until, group_by = args.get("since"), args.get("until"), args.get("group_by")
        where = [UsageRecord.user_id == current_user_id()]
        if since is not None:
            where.append(UsageRecord.created_at >= since)
        if until is not None:
            where.append(UsageRecord.created_at < until)
        db = get_db()
        groups = usage_groups(db, where, group_by, MAX_GROUPS + 1) if group_by else []
        return {
            "group_by": group_by,
            "since": since,
            "until": until,
            "totals": usage_totals(db, where),
            "groups": groups[:MAX_GROUPS],
            "truncated": len(groups) > MAX_GROUPS,
        }


@blp.route("/turns/<int:turn_id>/usage")
class TurnUsage(MethodView):
    @blp.response(200, TurnUsageSchema)
    @NOT_FOUND
    def get(self, turn_id):
        """A turn's LLM calls, their totals and per-agent sums

        One record per provider call the worker made for the turn, billed retries included, so
        the totals may exceed what the replies alone used.
        """
        # Visible exactly when GET /turns/{id} is: a deleted session's turns are 404 here too.
        turn = _get_turn_or_404(turn_id)
        db = get_db()
        where = [UsageRecord.user_id == current_user_id(), UsageRecord.turn_id == turn.id]
        records = db.scalars(
            select(UsageRecord)
            .where(*where)
            .order_by(UsageRecord.step, UsageRecord.attempt, UsageRecord.id)
        )
        return {
            "turn_id": turn.id,
            "totals": usage_totals(db, where),
            "by_agent": usage_groups(db, where, "agent", MAX_GROUPS),
            "records": list(records),
        }
