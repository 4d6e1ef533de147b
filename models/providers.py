"""The LLM provider catalog: which provider names the server knows, and how to reach them.

Providers are server configuration, never agent data: an agent row names a provider and a model,
and the worker looks the rest (URL, API-key variable, prices, retries) up here. API keys are read
from the environment variable a provider names, at call time, and never stored or returned.

Built in, always present:
- ``local``: the default. SmolLM2-135M-Instruct run by one llama.cpp server per host, shared by
  its worker processes (tiny and low quality, but real, offline, and free).
- ``instant``: answers at once with a short fixed text and plausible usage. For tests and
  benchmarks; never the default.

More come from a TOML file named by ``ROOMCAST_PROVIDERS_FILE``::

    [providers.openai]
    type = "openai"                         # any OpenAI-compatible server
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    default_model = "gpt-4o-mini"
    timeout = 60                            # seconds per request
    max_retries = 3                         # on 429, 5xx and connection errors
    tool_calling = "native"                 # or "text": the `search: ...` trigger only
    [providers.openai.prices."gpt-4o-mini"] # USD per million tokens
    prompt = "0.15"
    completion = "0.60"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROVIDER_TYPES = ("llamacpp", "openai", "instant")
LOCAL_PROVIDER = "local"
INSTANT_PROVIDER = "instant"
LOCAL_MODEL = "smollm2-135m-instruct"
MILLION = Decimal(1_000_000)
# How a provider's models call tools: OpenAI function calling, or (models without it) the text
# trigger `search: ...` in the user's message (see worker/agent_loop.py).
NATIVE_TOOL_CALLING = "native"
TEXT_TOOL_CALLING = "text"
TOOL_CALLING = (NATIVE_TOOL_CALLING, TEXT_TOOL_CALLING)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    prompt: Decimal = Decimal(0)
    completion: Decimal = Decimal(0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (self.prompt * prompt_tokens + self.completion * completion_tokens) / MILLION


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    default_model: str
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    # Model names this provider accepts; empty means any.
    models: tuple[str, ...] = ()
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    tool_calling: str = NATIVE_TOOL_CALLING

    def accepts_model(self, model: str) -> bool:
        return not self.models or model in self.models

    def price(self, model: str) -> ModelPrice:
        return self.prices.get(model) or self.prices.get("*") or ModelPrice()


BUILTIN_PROVIDERS = {
    LOCAL_PROVIDER: ProviderConfig(
        name=LOCAL_PROVIDER,
        type="llamacpp",
        default_model=LOCAL_MODEL,
        models=(LOCAL_MODEL,),
        timeout=120.0,
        max_retries=1,
        # Given tool definitions, SmolLM2-135M answered in plain text in our tries.
        tool_calling=TEXT_TOOL_CALLING,
    ),
    INSTANT_PROVIDER: ProviderConfig(
        name=INSTANT_PROVIDER, type="instant", default_model="instant"
    ),
}


def _decimal(where: str, value: Any) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
    return result


def _parse_provider(name: str, raw: dict[str, Any], source: str) -> ProviderConfig:
    where = f"{source}: [providers.{name}]"
    known = {
        "type",
        "base_url",
        "api_key_env",
        "default_model",
        "timeout",
        "max_retries",
        "models",
        "prices",
        "tool_calling",
    }
    if unknown := set(raw) - known:
        raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}")
    ptype = raw.get("type")
    if ptype not in PROVIDER_TYPES:
        raise ConfigError(f"{where} type must be one of {PROVIDER_TYPES}, got {ptype!r}")
    if ptype == "openai" and not raw.get("base_url"):
        raise ConfigError(f"{where} needs base_url")
    if not isinstance(raw.get("default_model"), str) or not raw["default_model"]:
        raise ConfigError(f"{where} needs default_model")
    prices = {}
    for model, price in (raw.get("prices") or {}).items():
        if not isinstance(price, dict) or set(price) - {"prompt", "completion"}:
            raise ConfigError(f"{where} prices.{model} must have prompt and completion only")
        prices[model] = ModelPrice(
            prompt=_decimal(f"{where} prices.{model}.prompt", price.get("prompt", 0)),
            completion=_decimal(f"{where} prices.{model}.completion", price.get("completion", 0)),
        )
    timeout = raw.get("timeout", 60)
    max_retries = raw.get("max_retries", 3)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where} timeout must be a positive number of seconds")
    if not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
        raise ConfigError(f"{where} max_retries must be an integer from 0 to 10")
    tool_calling = raw.get("tool_calling", NATIVE_TOOL_CALLING)
    if tool_calling not in TOOL_CALLING:
        raise ConfigError(f"{where} tool_calling must be one of {TOOL_CALLING}")
    models = raw.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where} models must be a list of model names")
    return ProviderConfig(
        name=name,
        type=ptype,
        default_model=raw["default_model"],
        base_url=raw.get("base_url"),
        api_key_env=raw.get("api_key_env"),
        timeout=float(timeout),
        max_retries=max_retries,
        models=tuple(models),
        prices=prices,
        tool_calling=tool_calling,
    )


@cache
def load_catalog(providers_file: str | None) -> dict[str, ProviderConfig]:
    """Built-in providers plus those of the TOML file (which may not redefine a built-in)."""
    catalog = dict(BUILTIN_PROVIDERS)
    if providers_file is None:
        return catalog
    path = Path(providers_file)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"ROOMCAST_PROVIDERS_FILE cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"ROOMCAST_PROVIDERS_FILE {path} is not valid TOML: {exc}") from None
    if set(data) - {"providers"}:
        raise ConfigError(f"{path}: only a [providers.NAME] table is allowed at the top level")
    for name, raw in (data.get("providers") or {}).items():
        if name in BUILTIN_PROVIDERS:
            raise ConfigError(f"{path}: provider name {name!r} is built in")
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [providers.{name}] must be a table")
        catalog[name] = _parse_provider(name, raw, str(path))
    return catalog
