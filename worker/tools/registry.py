"""The tool registry: every tool the worker can run, with the JSON schema of its arguments.

A tool is a name the model sees, a description, the JSON schema its arguments must satisfy
and a function. The function gets the validated arguments and a :class:`ToolContext` (whose
files and history it may reach) and returns a JSON-serialisable result, or raises
:class:`ToolError` with a message the model is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from ..providers.base import ToolSpec

if TYPE_CHECKING:
    from .dispatch import ToolContext


class ToolError(Exception):
    """The tool could not do what was asked; ``message`` goes back to the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    run: Callable[[dict[str, Any], ToolContext], Any]

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.parameters)
        object.__setattr__(self, "validator", Draft202012Validator(self.parameters))

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


REGISTRY: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    REGISTRY[tool.name] = tool
    return tool
