"""The commands as shipped: the Dockerfile's CMD (the API) and docker-compose.yml's services.

Whatever runs these processes outside Docker (``make stack``, the tests) reads them from here,
so it runs what ships and cannot drift from it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"


def dockerfile_cmd() -> list[str]:
    """The image's CMD, the API's command (exec form)."""
    line = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))
    return json.loads(line[len("CMD ") :])


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (merge keys resolved), before interpolation."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_command(name: str) -> list[str]:
    """A service's command: its own, else the image's CMD."""
    return list(compose()["services"][name].get("command") or dockerfile_cmd())


def api_command(host: str, port: int) -> list[str]:
    """The Dockerfile's CMD, listening on host:port, with this environment's gunicorn."""
    argv = local(dockerfile_cmd())
    argv[argv.index("--bind") + 1] = f"{host}:{port}"
    return argv


def local(argv: list[str]) -> list[str]:
    """The command with its program from this Python's environment (the image has it on PATH)."""
    program = Path(sys.executable).parent / argv[0]
    if not program.exists():
        program = Path(shutil.which(argv[0]) or argv[0])
    return [str(program), *argv[1:]]
