"""Where the CLI keeps the server's address and the user's token between runs.

One TOML file in the user's configuration folder (``$XDG_CONFIG_HOME/roomcast/config.toml`` on
Linux, as click picks it per platform), readable by its owner only: it holds a bearer token.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import tomli_w

APP_NAME = "roomcast"
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass
class Config:
    url: str | None = None
    token: str | None = None
    token_id: int | None = None  # to revoke the token at logout
    email: str | None = None


def config_path() -> Path:
    return Path(click.get_app_dir(APP_NAME)) / "config.toml"


def load(path: Path | None = None) -> Config:
    """The stored configuration; empty when there is none.

    A file that is not TOML is a clear error (raised as click.FileError), not a traceback."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise click.FileError(str(path), hint=str(exc)) from None
    known = Config.__dataclass_fields__
    return Config(**{key: value for key, value in data.items() if key in known})


def save(config: Config, path: Path | None = None) -> Path:
    """Write ``config`` atomically, mode 0600 from its first byte (the folder 0700)."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    values = {key: value for key, value in asdict(config).items() if value is not None}
    # mkstemp creates the file 0600; os.replace swaps it in whole, so no reader ever sees a
    # half-written file or one readable by others.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as file:
            tomli_w.dump(values, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
