"""Rooms, their orchestration, and their membership."""

from __future__ import annotations

import marshmallow as ma

from models.providers import LOCAL_MODEL, LOCAL_PROVIDER
from models.rooms import ROOM_MODES

from ..membership import MAX_ROOM_AGENTS
from ..orchestration import MAX_ROUNDS, orchestration_of
from .agents import AgentSummarySchema
from .base import (
    TIMESTAMP_EXAMPLE,
    Metadata,
    StrictSchema,
    TimestampedReadSchema,
    description_field,
    id_field,
    name_field,
    prompt_field,
)
from .storable import Schema

POSITION = ma.validate.Range(min=0, max=MAX_ROOM_AGENTS - 1)


class OrchestrationSchema(StrictSchema):
    """Who speaks in the room, and for how long. Options of another mode are rejected."""

    mode = ma.fields.String(
        validate=ma.validate.OneOf(ROOM_MODES),
        metadata={
            "description": "sequential: every agent once, in position order; round_robin: the "
            "next agent in turn; mention: the agents addressed by @name; supervisor: a selector "
            "picks each next speaker. Default: sequential.",
            "example": "supervisor",
        },
    )
    max_rounds = ma.fields.Integer(
        strict=True,
        validate=ma.validate.Range(min=1, max=MAX_ROUNDS),
        metadata={
            "description": f"Bound on a turn's rounds, 1 to {MAX_ROUNDS}; default 1.",
            "example": 3,
        },
    )
    selector_agent_id = id_field(
        allow_none=True,
        metadata={
            "description": "supervisor: one of your agents picks the next speaker.",
            "example": None,
        },
    )
    selector_provider = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Length(min=1, max=100),
        metadata={
            "description": "supervisor: the provider of the selector model (without a selector "
            "agent or model: the server's default provider).",
            "example": LOCAL_PROVIDER,
        },
    )
    selector_model = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Length(min=1, max=200),
        metadata={
            "description": "supervisor: the selector model (default: the provider's default).",
            "example": LOCAL_MODEL,
        },
    )
    default_agent_id = id_field(
        allow_none=True,
        metadata={
            "description": "mention: the agent that answers a message addressed to nobody.",
            "example": None,
        },
    )


class Orchestration(ma.fields.Nested):
    """The room's mode and bound (columns) and mode options (JSON), read as one object."""

    def _serialize(self, nested_obj, attr, obj, **kwargs):
        return super()._serialize(orchestration_of(obj), attr, obj, **kwargs)


class RoomAgentSchema(Schema):
    """An agent's place in a room."""

    room_id = ma.fields.Integer(dump_only=True, metadata={"example": 3})
    agent_id = ma.fields.Integer(dump_only=True, metadata={"example": 7})
    position = ma.fields.Integer(
        dump_only=True,
        metadata={"description": "0-based place in the speaking order.", "example": 0},
    )
    created_at = ma.fields.DateTime(dump_only=True, metadata=TIMESTAMP_EXAMPLE)
    agent = ma.fields.Nested(AgentSummarySchema, dump_only=True)


class RoomSchema(StrictSchema, TimestampedReadSchema):
    name = name_field(required=True, metadata={"example": "release crew"})
    description = description_field(
        metadata={"description": "Default empty.", "example": "Writes the release notes."}
    )
    instructions = prompt_field(
        metadata={
            "description": "Shared context every agent in the room sees. Default empty.",
            "example": "We are preparing the 2.0 release notes; keep them short.",
        }
    )
    orchestration = Orchestration(OrchestrationSchema)
    meta = Metadata()
    agents = ma.fields.List(
        ma.fields.Nested(RoomAgentSchema),
        dump_only=True,
        attribute="members",
        metadata={"description": "The room's agents in speaking order."},
    )


class RoomUpdateSchema(RoomSchema):
    """The fields to change (used with ``partial=True``); the others keep their value.

    ``orchestration`` is merged into the current one: a null option clears it.
    """


class RoomAgentCreateSchema(StrictSchema):
    agent_id = id_field(required=True, metadata={"example": 7})
    position = ma.fields.Integer(
        strict=True,
        validate=POSITION,
        metadata={
            "description": "0-based place in the speaking order; the agents from there move "
            "down one. Default (or past the end): last.",
            "example": 0,
        },
    )


class RoomAgentUpdateSchema(StrictSchema):
    position = ma.fields.Integer(
        strict=True,
        required=True,
        validate=POSITION,
        metadata={
            "description": "New 0-based place; the others keep their order around it. Past "
            "the end: last.",
            "example": 1,
        },
    )
