"""Marshmallow schemas at the API's edge: separate create, update and read schemas."""
