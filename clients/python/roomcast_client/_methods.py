"""One definition of each API method serves both clients.

A resource method is written once, as a function that builds a program (``_program.py``), and
decorated with ``@operation`` (one answer) or ``@listing`` (an iterator). Read from a resource
of the sync client it runs the program and returns its value (or an Iterator); from one of the
async client it returns a coroutine (or an AsyncIterator). The overloads below give type
checkers the same view.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    overload,
)

from ._program import Policy, Program

P = ParamSpec("P")
T = TypeVar("T")


class Sync:
    """Marks the resources of ``Roomcast``: methods answer when the request is done."""


class Async:
    """Marks the resources of ``AsyncRoomcast``: methods are coroutines, lists async
    iterators."""


M = TypeVar("M", bound="Sync | Async")


class Runner(Protocol):
    def run(self, program: Program[Any]) -> Any: ...

    def iterate(self, program: Program[None]) -> Any: ...


@dataclass(frozen=True)
class Core(Generic[M]):
    """What every resource of one client shares."""

    runner: Runner
    policy: Policy


class Resource(Generic[M]):
    def __init__(self, core: Core[M]) -> None:
        self._core = core

    @property
    def _policy(self) -> Policy:
        return self._core.policy


@dataclass(frozen=True)
class Items(Generic[T]):
    """A program that emits the items of type T (what a ``@listing`` method builds)."""

    program: Program[None]


class _Method(Generic[P, T]):
    _runner_method = "run"

    def __init__(self, build: Callable[Concatenate[Any, P], Any]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    def __get__(self, resource: Resource[Any] | None, owner: type[Any]) -> Any:
        if resource is None:
            return self
        build, perform = self._build, getattr(resource._core.runner, self._runner_method)

        @functools.wraps(build)
        def method(*args: Any, **kwargs: Any) -> Any:
            built = build(resource, *args, **kwargs)
            return perform(built.program if isinstance(built, Items) else built)

        return method


class operation(_Method[P, T]):
    """A method with one answer: T (sync client) or a coroutine of T (async client)."""

    def __init__(self, build: Callable[Concatenate[Any, P], Program[T]]) -> None:
        super().__init__(build)

    if TYPE_CHECKING:

        @overload
        def __get__(self, resource: None, owner: type[Any]) -> Self: ...
        @overload
        def __get__(self, resource: Resource[Sync], owner: type[Any]) -> Callable[P, T]: ...
        @overload
        def __get__(
            self, resource: Resource[Async], owner: type[Any]
        ) -> Callable[P, Coroutine[Any, Any, T]]: ...
        def __get__(self, resource: Any, owner: type[Any]) -> Any: ...


class listing(_Method[P, T]):
    """A method that iterates: an Iterator of T (sync client) or an AsyncIterator of T."""

    _runner_method = "iterate"

    def __init__(self, build: Callable[Concatenate[Any, P], Items[T]]) -> None:
        super().__init__(build)

    if TYPE_CHECKING:

        @overload
        def __get__(self, resource: None, owner: type[Any]) -> Self: ...
        @overload
        def __get__(
            self, resource: Resource[Sync], owner: type[Any]
        ) -> Callable[P, Iterator[T]]: ...
        @overload
        def __get__(
            self, resource: Resource[Async], owner: type[Any]
        ) -> Callable[P, AsyncIterator[T]]: ...
        def __get__(self, resource: Any, owner: type[Any]) -> Any: ...
