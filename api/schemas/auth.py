from __future__ import annotations

import marshmallow as ma

from .base import ReadSchema, StrictSchema

MIN_PASSWORD_LENGTH = 8
# Bounded: a slow hash of a megabyte-long password would be a cheap denial of service.
MAX_PASSWORD_LENGTH = 256


class RegisterSchema(StrictSchema):
    email = ma.fields.Email(
        required=True, validate=ma.validate.Length(max=320), metadata={"example": "ada@example.com"}
    )
    password = ma.fields.String(
        required=True,
        load_only=True,
        validate=ma.validate.Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH),
        metadata={"example": "correct horse battery staple"},
    )


class LoginSchema(StrictSchema):
    email = ma.fields.Email(required=True, metadata={"example": "ada@example.com"})
    password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(max=MAX_PASSWORD_LENGTH)
    )
    name = ma.fields.String(
        load_default="",
        validate=ma.validate.Length(max=100),
        metadata={"description": "A label for the token, e.g. the client."},
    )


class UserSchema(ReadSchema):
    email = ma.fields.Email(dump_only=True)


class TokenSchema(ReadSchema):
    name = ma.fields.String(dump_only=True)
    token_hint = ma.fields.String(
        dump_only=True, metadata={"description": "First characters of the secret."}
    )
    last_used_at = ma.fields.DateTime(dump_only=True, allow_none=True)
    expires_at = ma.fields.DateTime(dump_only=True, allow_none=True)


class NewTokenSchema(TokenSchema):
    token = ma.fields.String(
        dump_only=True, metadata={"description": "The bearer secret; shown once, store it now."}
    )
