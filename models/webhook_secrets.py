"""Each user's webhook signing secret (Standard Webhooks: ``whsec_`` and base64 of 32 bytes).

The worker needs the secret itself to sign, so it cannot be stored as a hash like an API token.
It is stored encrypted (Fernet) under a key derived from ROOMCAST_SECRET_KEY: a copy of the
database alone (a backup, a read replica, an SQL injection) does not reveal it. Changing
ROOMCAST_SECRET_KEY makes the stored secrets unreadable: deliveries then fail with
``secret_unreadable`` until the user rotates the secret.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


class WebhookSecret(Base):
    __tablename__ = "webhook_secrets"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # The secret as a Fernet token (see the module's docstring); never shown after creation.
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class UnreadableSecret(Exception):
    """The stored secret cannot be decrypted with this server's key (the key changed)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@cache
def _fernet(secret_key: str) -> Fernet:
    # A key of its own for this purpose, derived from the server's: the same secret key also
    # signs list cursors, and neither use can stand in for the other.
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"roomcast webhook secrets"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(secret: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode()).decode()


def unseal(sealed: str, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise UnreadableSecret from None
