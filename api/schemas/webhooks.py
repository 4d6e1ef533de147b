"""Webhook URLs in requests (checked by models/webhook_urls.py), and the signing secret."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from models.schema_fields import TIMESTAMP_EXAMPLE
from models.webhook_urls import MAX_URL_LENGTH, WebhookURLError, check_webhook_url

from ..state import state
from .storable import Schema

URL_EXAMPLE = "https://example.com/hooks/roomcast"


class WebhookURL(ma.fields.String):
    """An http(s) URL a webhook may name: a host that is a name or a public address, unless the
    operator allowed it (ROOMCAST_WEBHOOK_ALLOWED_HOSTS)."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        url = super()._deserialize(value, attr, data, **kwargs)
        try:
            check_webhook_url(url, state().settings.webhook_allowed_hosts)
        except WebhookURLError as error:
            raise ma.ValidationError(str(error)) from None
        return url


def webhook_field(description: str, **kwargs: Any) -> WebhookURL:
    return WebhookURL(
        allow_none=True,
        validate=ma.validate.Length(max=MAX_URL_LENGTH),
        metadata={"description": description, "format": "uri", "example": URL_EXAMPLE},
        **kwargs,
    )


class WebhookSecretSchema(Schema):
    exists = ma.fields.Boolean(dump_only=True)
    created_at = ma.fields.DateTime(
        dump_only=True, allow_none=True, metadata={"description": "null: none yet."}
    )


class NewWebhookSecretSchema(Schema):
    secret = ma.fields.String(
        dump_only=True,
        metadata={
            "description": "Verifies the webhook-signature of every delivery (Standard "
            "Webhooks); shown once, store it now.",
            "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
    )
    created_at = ma.fields.DateTime(dump_only=True, metadata=TIMESTAMP_EXAMPLE)
