"""docker-compose.yml ships no secret: every secret is a required variable (``${VAR:?...}``),
so the stack refuses to start without it, and .env.example documents each one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "docker-compose.yml").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ROOMCAST_SECRET_KEY", "FLOWER_BASIC_AUTH"}
# Compose interpolation: $$ is a literal $, ${NAME}, ${NAME:-default}, ${NAME:?error}...
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """What ``docker compose`` does to the file before it starts anything."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        if op == ":?" and not value or op == "?" and value is None:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def test_every_secret_is_required():
    required = {m.group("name") for m in _VARIABLE.finditer(COMPOSE) if m.group("op") == ":?"}
    assert required == SECRETS
    # Nothing falls back to a default secret, and no credential is written in the file.
    defaulted = {m.group("name") for m in _VARIABLE.finditer(COMPOSE) if m.group("op") == ":-"}
    assert not defaulted & SECRETS
    assert "change-me" not in COMPOSE
    assert "roomcast:roomcast@" not in COMPOSE
    assert not re.search(r"^\s*POSTGRES_PASSWORD:\s*[^$\s]", COMPOSE, re.MULTILINE)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_the_stack_refuses_to_start_without_each_secret(missing):
    env = {name: "s3cr3t-value-0123456789" for name in SECRETS - {missing}}
    with pytest.raises(MissingVariable, match=f"^{missing}: set {missing}"):
        interpolate(COMPOSE, env)
    with pytest.raises(MissingVariable):
        interpolate(COMPOSE, {**env, missing: ""})  # empty is not a secret either


def test_with_every_secret_set_the_services_get_them():
    env = {
        "POSTGRES_PASSWORD": "pgpass0123",
        "REDIS_PASSWORD": "redispass0123",
        "ROOMCAST_SECRET_KEY": "a-secret-key-of-32-characters-xx",
        "FLOWER_BASIC_AUTH": "admin:flowerpass",
    }
    text = interpolate(COMPOSE, env)
    assert "postgresql+psycopg://roomcast:pgpass0123@postgres:5432/roomcast" in text
    assert "redis://:redispass0123@redis:6379/0" in text
    assert 'redis-server --appendonly yes --requirepass \\"$REDIS_PASSWORD\\"' in text
    assert "ROOMCAST_SECRET_KEY: a-secret-key-of-32-characters-xx" in text
    assert "FLOWER_BASIC_AUTH: admin:flowerpass" in text


def test_env_example_documents_each_secret_and_sets_none():
    assignments = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(assignments) == SECRETS
    assert all(value == "" for value in assignments.values())
    for name in SECRETS:
        # A comment right above each variable says what it is for.
        above = ENV_EXAMPLE.split(f"\n{name}=")[0].rstrip().splitlines()[-1]
        assert above.startswith("# "), name


def test_the_real_env_file_is_kept_out_of_git_and_images():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
