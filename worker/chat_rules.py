"""Contexts every chat template accepts (see conform)."""

from __future__ import annotations

from .providers.base import ChatMessage


def conform(messages: list[ChatMessage]) -> list[ChatMessage]:
    return messages
