"""Choosing a provider and model from the server's catalog, for agents and room selectors."""

from __future__ import annotations

import marshmallow as ma

from .state import state


def resolve_model(
    provider: str | None,
    model: str | None,
    current: tuple[str, str] | None = None,
    *,
    fields: tuple[str, str] = ("provider", "model"),
) -> tuple[str, str]:
    """The ``(provider, model)`` pair a request asks for, checked against the catalog.

    An omitted provider is the current one, else the server default; an omitted model is the
    current one while the provider stays the same, else the provider's default model (model names
    belong to a provider, so changing provider alone moves to the new provider's default).
    Raises ``ValidationError`` keyed by ``fields`` (the request's names for the two values).
    """
    settings = state().settings
    catalog = settings.providers()
    provider_field, model_field = fields
    name = provider or (current[0] if current else settings.default_provider)
    config = catalog.get(name)
    if config is None:
        known = ", ".join(sorted(catalog))
        raise ma.ValidationError({provider_field: [f"Unknown provider {name!r}; known: {known}."]})
    if model is None:
        model = current[1] if current and current[0] == name else config.default_model
    if not config.accepts_model(model):
        accepted = ", ".join(config.models)
        raise ma.ValidationError(
            {
                model_field: [
                    f"Provider {name!r} does not offer model {model!r}; it offers: {accepted}."
                ]
            }
        )
    return name, model
