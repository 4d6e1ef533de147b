"""Running one tool call the model asked for, after checking that the agent may.

The permission check is here, at call time, not in the prompt: a model may name any tool,
offered or not. A call to an unknown tool, to a tool outside the agent's allow-list, or with
arguments that fail the tool's schema is refused and never run; a tool that fails gives an
error. Each outcome is a tool message for the model to read, never a failed turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..providers.base import ToolCall, ToolSpec
from . import builtin  # noqa: F401  (registers the built-in tools)
from .registry import REGISTRY, ToolError

log = logging.getLogger(__name__)

OK = "ok"
# Error codes of refused or failed calls, kept on the tool message's metadata.
TOOL_UNKNOWN = "tool_unknown"
TOOL_NOT_ALLOWED = "tool_not_allowed"
TOOL_BAD_ARGUMENTS = "tool_bad_arguments"
TOOL_ERROR = "tool_error"
TOOL_FAILED = "tool_failed"  # the tool raised something unexpected (logged)


@dataclass(frozen=True)
class ToolContext:
    """Whose data a call may reach: the session owner's files, the session's history before
    the turn's own message."""

    user_id: int
    session_id: int
    turn_id: int
    agent_id: int
    before_message_id: int | None


@dataclass(frozen=True)
class ToolOutcome:
    call: ToolCall
    content: str  # the tool message's text: the JSON result, or {"error": ...}
    status: str  # OK or one of the error codes

    @property
    def metadata(self) -> dict[str, Any]:
        return {"tool": self.call.name, "status": self.status}


def offered_specs(allowed: Iterable[str]) -> list[ToolSpec]:
    """The tools offered to a model: the agent's allow-list, of those this server has."""
    return [REGISTRY[name].spec for name in allowed if name in REGISTRY]


def dispatch(call: ToolCall, allowed: Iterable[str], context: ToolContext) -> ToolOutcome:
    tool = REGISTRY.get(call.name)
    if tool is None:
        known = ", ".join(sorted(set(allowed) & set(REGISTRY))) or "none"
        return _refused(call, TOOL_UNKNOWN, f"There is no tool {call.name!r} (yours: {known}).")
    if call.name not in set(allowed):
        return _refused(call, TOOL_NOT_ALLOWED, f"You are not allowed to use {call.name!r}.")
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return _refused(call, TOOL_BAD_ARGUMENTS, "The arguments are not valid JSON.")
    problems = sorted(tool.validator.iter_errors(arguments), key=lambda e: list(e.path))
    if problems:
        why = "; ".join(_describe(p) for p in problems[:3])
        return _refused(call, TOOL_BAD_ARGUMENTS, f"Invalid arguments for {call.name}: {why}")
    try:
        result = tool.run(arguments, context)
    except ToolError as exc:
        return _refused(call, TOOL_ERROR, exc.message)
    except Exception:
        log.exception("tool %s failed (turn %s)", call.name, context.turn_id)
        return _refused(call, TOOL_FAILED, f"The tool {call.name} failed unexpectedly.")
    return ToolOutcome(call, json.dumps(result, ensure_ascii=False), OK)


def _refused(call: ToolCall, code: str, message: str) -> ToolOutcome:
    return ToolOutcome(call, json.dumps({"error": message}, ensure_ascii=False), code)


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.path)
    return f"{where}: {error.message}" if where else error.message
