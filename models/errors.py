"""Errors shared by the API and the worker."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or malformed."""
