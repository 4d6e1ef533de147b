"""Agents: what a client may set, and what it reads back."""

from __future__ import annotations

import marshmallow as ma

from models.providers import LOCAL_MODEL, LOCAL_PROVIDER
from models.tools import KNOWN_TOOLS

from .base import (
    JsonFloat,
    Metadata,
    StrictSchema,
    TimestampedReadSchema,
    description_field,
    name_field,
    prompt_field,
    unique_items,
)
from .storable import Schema

MAX_TOKENS = 32768


class AgentSchema(StrictSchema, TimestampedReadSchema):
    """An agent. Creating one needs only a name: the rest defaults to a working offline agent."""

    name = name_field(
        required=True,
        metadata={
            "description": "Unique among your agents (a deleted agent frees its name).",
            "example": "writer",
        },
    )
    description = description_field(
        metadata={"description": "Default empty.", "example": "Drafts release notes."}
    )
    provider = ma.fields.String(
        validate=ma.validate.Length(min=1, max=100),
        metadata={
            "description": "A provider name the server knows; default: the server's default.",
            "example": LOCAL_PROVIDER,
        },
    )
    model = ma.fields.String(
        validate=ma.validate.Length(min=1, max=200),
        metadata={
            "description": "A model the provider offers; default: the provider's default model.",
            "example": LOCAL_MODEL,
        },
    )
    system_prompt = prompt_field(
        metadata={
            "description": "Private instructions only this agent sees. Default empty.",
            "example": "You write short, friendly release notes.",
        }
    )
    temperature = JsonFloat(
        allow_none=True,
        validate=ma.validate.Range(min=0, max=2),
        metadata={"description": "0 to 2; null: the provider's default.", "example": 0.7},
    )
    max_tokens = ma.fields.Integer(
        strict=True,
        allow_none=True,
        validate=ma.validate.Range(min=1, max=MAX_TOKENS),
        metadata={
            "description": f"Reply length cap, 1 to {MAX_TOKENS}; null: the provider's default.",
            "example": 512,
        },
    )
    tools = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf(KNOWN_TOOLS)),
        validate=unique_items,
        metadata={
            "description": "The tools this agent may call (an allow-list; empty: none).",
            "example": ["search"],
        },
    )
    meta = Metadata()


class AgentUpdateSchema(AgentSchema):
    """The fields to change (used with ``partial=True``); the others keep their value.

    Changing ``provider`` without ``model`` moves the agent to that provider's default model.
    """


class AgentSummarySchema(Schema):
    id = ma.fields.Integer(dump_only=True, metadata={"example": 7})
    name = ma.fields.String(dump_only=True, metadata={"example": "writer"})
    provider = ma.fields.String(dump_only=True, metadata={"example": LOCAL_PROVIDER})
    model = ma.fields.String(dump_only=True, metadata={"example": LOCAL_MODEL})
