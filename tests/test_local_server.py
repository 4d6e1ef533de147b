"""The local model's server is one per host (worker/local_server.py): started by the first
process that needs it, found by the others, started again when it died."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from models.providers import BUILTIN_PROVIDERS, LOCAL_MODEL, LOCAL_PROVIDER
from worker import local_server
from worker.providers import ChatMessage, LocalLlamaProvider

ROOT = Path(__file__).resolve().parent.parent
# Another worker process of the host: which server does its provider call?
OTHER_PROCESS = """
import json
from models.providers import BUILTIN_PROVIDERS, LOCAL_PROVIDER
from worker.providers import LocalLlamaProvider

provider = LocalLlamaProvider(BUILTIN_PROVIDERS[LOCAL_PROVIDER])
provider.started()
print(json.dumps({"pid": provider._server.pid, "address": provider._server.address}))
"""


def other_process_server() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_processes_share_one_server_and_a_dead_one_is_started_again():
    provider = LocalLlamaProvider(BUILTIN_PROVIDERS[LOCAL_PROVIDER])
    provider.started()
    server = provider._server
    assert other_process_server() == {"pid": server.pid, "address": server.address}
    assert server.pid != os.getpid()

    # Private: the folder is this user's, the file with the key readable by this user only,
    # and the key is on no command line.
    folder = local_server.runtime_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (info,) = [p for p in folder.glob("local-model-*.json") if str(server.pid) in p.read_text()]
    assert stat.S_IMODE(info.stat().st_mode) == 0o600
    assert server.api_key not in Path(f"/proc/{server.pid}/cmdline").read_text()

    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local_server.is_alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    completion = provider.complete([ChatMessage("user", "Hi.")], model=LOCAL_MODEL, max_tokens=4)
    assert completion.content.strip()
    assert provider._server.pid != server.pid
    assert other_process_server()["pid"] == provider._server.pid
