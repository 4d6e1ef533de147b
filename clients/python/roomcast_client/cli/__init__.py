"""The ``roomcast`` command line (installed with the ``cli`` extra: click and rich)."""

from .main import cli, main

__all__ = ["cli", "main"]
