"""Tools an agent may call: the registry, the dispatcher that enforces each agent's allow-list,
and the built-in tools (``file_read``, ``search``)."""

from .dispatch import ToolContext, ToolOutcome, dispatch, offered_specs
from .registry import REGISTRY, Tool, ToolError

__all__ = [
    "REGISTRY",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "dispatch",
    "offered_specs",
]
