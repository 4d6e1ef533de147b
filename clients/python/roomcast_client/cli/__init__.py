"""The ``roomcast`` command line, installed with the ``cli`` extra
(``pip install 'roomcast-client[cli]'``): click, rich and tomli-w."""

from __future__ import annotations

_EXTRA = frozenset({"click", "rich", "tomli_w"})


def main() -> None:
    """The ``roomcast`` console script."""
    try:
        from .main import main as run
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA:
            raise
        raise SystemExit(
            f"roomcast: {exc.name} is missing; the command line needs the cli extra: "
            "pip install 'roomcast-client[cli]'"
        ) from None
    run()


__all__ = ["main"]
