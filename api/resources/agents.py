"""Agents: a user's reusable model + system prompt + tool allow-list."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy.exc import IntegrityError

from models import Agent, utcnow
from models.providers import LOCAL_MODEL

from ..auth import current_user_id
from ..catalog import resolve_model
from ..errors import error_response
from ..membership import leave_all_rooms
from ..orchestration import forget_agent
from ..ownership import get_owned_or_404, list_live_named
from ..pagination import invalid_list_args, page_schema
from ..quotas import limit_reached_response, require_below_cap
from ..schemas.agents import AgentSchema, AgentUpdateSchema
from ..schemas.base import NameSearchArgsSchema
from ..state import get_db

blp = Blueprint(
    "agents",
    __name__,
    url_prefix="/api/v1/agents",
    description="Your agents: a model, a system prompt and the tools each may use.",
)

NOT_FOUND = error_response(
    blp, 404, "No such agent (or not yours).", {"not_found": "Agent 7 not found."}
)
NAME_TAKEN = error_response(
    blp,
    409,
    "You already have a live agent of that name.",
    {"name_taken": "You already have an agent named 'writer'."},
)
NAME_TAKEN_OR_LIMIT_REACHED = limit_reached_response(
    blp,
    Agent,
    "You already have a live agent of that name",
    name_taken="You already have an agent named 'writer'.",
)
INVALID = error_response(
    blp,
    422,
    "Invalid fields: unknown or read-only, wrong type, out of range, unknown provider, model or "
    "tool, oversized metadata. Nothing is written.",
    errors={
        "temperature": ["Must be greater than or equal to 0 and less than or equal to 2."],
        "model": [f"Provider 'local' does not offer model 'gpt-4o'; it offers: {LOCAL_MODEL}."],
    },
)


def _choose_model(data: dict, agent: Agent | None = None) -> None:
    """Fill in ``data``'s provider and model from the request, the agent's current ones and the
    catalog; 422 when the catalog does not have them."""
    if agent is not None and not {"provider", "model"} & data.keys():
        return  # not re-checked, so a provider the operator retired blocks no other change
    current = (agent.provider, agent.model) if agent is not None else None
    try:
        data["provider"], data["model"] = resolve_model(
            data.get("provider"), data.get("model"), current
        )
    except ma.ValidationError as exc:
        abort(422, errors=exc.messages)


def _commit_or_name_taken(name: str) -> None:
    db = get_db()
    try:
        db.commit()
    except IntegrityError:
        # The partial unique index on live names decides, also between concurrent requests.
        db.rollback()
        abort(409, message=f"You already have an agent named {name!r}.", code="name_taken")


@blp.route("")
class Agents(MethodView):
    @blp.arguments(AgentSchema)
    @blp.response(201, AgentSchema)
    @NAME_TAKEN_OR_LIMIT_REACHED
    @INVALID
    def post(self, data):
        """Create an agent

        Only `name` is required: the agent then runs the server's default (offline) model with
        no system prompt and no tools. A user may have ROOMCAST_MAX_AGENTS_PER_USER live agents
        (409 `limit_reached` beyond).
        """
        _choose_model(data)
        db = get_db()
        require_below_cap(db, Agent)
        agent = Agent(user_id=current_user_id(), **data)
        db.add(agent)
        _commit_or_name_taken(agent.name)
        return agent

    @blp.arguments(NameSearchArgsSchema, location="query")
    @blp.response(200, page_schema(AgentSchema))
    @invalid_list_args(blp)
    def get(self, args):
        """List my agents (deleted ones are left out)"""
        return list_live_named(Agent, args)


@blp.route("/<int:agent_id>")
class AgentById(MethodView):
    @blp.response(200, AgentSchema)
    @NOT_FOUND
    def get(self, agent_id):
        """Get an agent"""
        return get_owned_or_404(Agent, agent_id)

    @blp.arguments(AgentUpdateSchema(partial=True))
    @blp.response(200, AgentSchema)
    @NOT_FOUND
    @NAME_TAKEN
    @INVALID
    def patch(self, data, agent_id):
        """Change an agent

        Send only the fields to change. Changing `provider` without `model` moves the agent to
        that provider's default model. `metadata` is replaced as a whole.
        """
        agent = get_owned_or_404(Agent, agent_id)
        _choose_model(data, agent)
        for field, value in data.items():
            setattr(agent, field, value)
        _commit_or_name_taken(agent.name)
        return agent

    @blp.response(204)
    @NOT_FOUND
    def delete(self, agent_id):
        """Delete an agent

        The agent leaves every room and its name is free again; sessions, messages and usage
        that refer to it stay readable.
        """
        # Locked so that a concurrent assignment or selector choice of this agent either
        # commits first (and is undone below) or sees it deleted.
        agent = get_owned_or_404(Agent, agent_id, for_update=True)
        db = get_db()
        agent.deleted_at = utcnow()
        leave_all_rooms(db, agent)
        forget_agent(db, agent)
        db.commit()
