"""docker-compose.yml: it ships no secret (every secret is a required variable,
``${VAR:?...}``, so the stack refuses to start without it, and .env.example documents each one),
and it stays consistent with the code: every command names an entry point that exists, with
options its program accepts, and every variable is a setting the code reads.

Docker is not needed: the file is read as compose reads it (YAML with merge keys, then its
variables interpolated), and each command is parsed by its own program's parser (gunicorn's,
Celery's, Flower's, Alembic's). tests/test_stack.py runs the commands and the healthchecks.
"""

from __future__ import annotations

import ast
import re
import runpy
import shlex
from pathlib import Path

import pytest
import yaml

from models.settings import _KNOWN_PREFIXED, DEPLOYMENT_SETTINGS, Settings
from scripts.shipped import dockerfile_cmd

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "docker-compose.yml").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ROOMCAST_SECRET_KEY", "FLOWER_BASIC_AUTH"}
# Settings an operator may leave empty (compose passes ``${NAME:-}``).
OPTIONAL = {"ROOMCAST_METRICS_TOKEN"}
ROOMCAST_SERVICES = ("migrate", "api", "worker", "beat", "flower")
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
    assert set(assignments) == SECRETS | OPTIONAL
    assert all(value == "" for value in assignments.values())
    for name in SECRETS | OPTIONAL:
        # A comment right above each variable says what it is for.
        above = ENV_EXAMPLE.split(f"\n{name}=")[0].rstrip().splitlines()[-1]
        assert above.startswith("# "), name


def test_the_real_env_file_is_kept_out_of_git_and_images():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


# -- consistency with the code -------------------------------------------------------------------

SECRET_VALUES = {
    "POSTGRES_PASSWORD": "pgpass0123",
    "REDIS_PASSWORD": "redispass0123",
    "ROOMCAST_SECRET_KEY": "a-secret-key-of-32-characters-xx",
    "FLOWER_BASIC_AUTH": "admin:flowerpass",
    "ROOMCAST_METRICS_TOKEN": "a-metrics-token",
}


def compose_config(env: dict[str, str]) -> dict:
    """The file as ``docker compose`` sees it: YAML (merge keys resolved), then each string
    value interpolated."""

    def resolve(value):
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return interpolate(value, env) if isinstance(value, str) else value

    return resolve(yaml.safe_load(COMPOSE))


@pytest.fixture(scope="module")
def spec() -> dict:
    return compose_config(SECRET_VALUES)


READERS = {"get", "getenv", "environ", "setdefault"}
VARIABLE_NAME = re.compile(r"[A-Z][A-Z0-9_]+")


def _read_variables(tree: ast.AST) -> set[str]:
    """Variable names read with a literal: os.environ.get/[...], os.getenv, and the ``get`` of
    Settings.from_env."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            called, key = node.value.attr, node.slice
        else:
            continue
        literal = key.value if isinstance(key, ast.Constant) else None
        if called in READERS and isinstance(literal, str) and VARIABLE_NAME.fullmatch(literal):
            names.add(literal)
    return names


def variables_the_code_reads() -> set[str]:
    """Every environment variable the project's processes read (ROOMCAST_* ones are checked by
    Settings.from_env itself, which refuses an unknown one)."""
    files = [ROOT / "serve.py", ROOT / "gunicorn.conf.py"]
    for package in ("api", "worker", "models"):
        files += (ROOT / package).rglob("*.py")
    names = set()
    for path in files:
        names |= _read_variables(ast.parse(path.read_text()))
    return names | _KNOWN_PREFIXED


def test_the_scan_finds_the_readers_of_the_environment():
    read = variables_the_code_reads()
    # Settings.from_env, models/metrics.py and gunicorn.conf.py, worker/local_server.py, serve.py
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"} <= read
    assert {"PROMETHEUS_MULTIPROC_DIR", "XDG_RUNTIME_DIR", "HOST", "PORT"} <= read


def test_the_roomcast_services_share_one_environment(spec):
    shared = spec["x-roomcast-env"]
    assert set(spec["services"]) == {"postgres", "redis", *ROOMCAST_SERVICES}
    for name in ROOMCAST_SERVICES:
        service = spec["services"][name]
        assert service["image"] == "roomcast:latest", name
        environment = service["environment"]
        assert {key: environment.get(key) for key in shared} == shared, name
    own = {
        name: set(spec["services"][name]["environment"]) - set(shared) for name in ROOMCAST_SERVICES
    }
    assert own == {
        "migrate": set(),
        "api": {"PROMETHEUS_MULTIPROC_DIR"},
        "worker": set(),
        "beat": set(),
        "flower": {"FLOWER_BASIC_AUTH"},
    }


def test_every_variable_is_a_setting_the_code_reads(spec):
    from flower.command import is_flower_envvar

    read = variables_the_code_reads()
    for name in ROOMCAST_SERVICES:
        for variable in spec["services"][name]["environment"]:
            known = variable in read or (name == "flower" and is_flower_envvar(variable))
            assert known, f"{name}: {variable} is read by no code"


def test_every_setting_a_deployment_needs_is_provided_and_valid(spec):
    for name in ROOMCAST_SERVICES:
        environment = spec["services"][name]["environment"]
        assert set(DEPLOYMENT_SETTINGS) <= set(environment), name
        settings = Settings.from_env(environment)  # refuses unknown or malformed settings
        assert settings.database_url.startswith("postgresql+psycopg://roomcast:pgpass0123@")
        assert settings.broker_url == "redis://:redispass0123@redis:6379/0"
        assert settings.secret_key == SECRET_VALUES["ROOMCAST_SECRET_KEY"]
        assert settings.metrics_token == SECRET_VALUES["ROOMCAST_METRICS_TOKEN"]
    # Left empty, the metrics token turns metrics off; the rest still starts.
    environment = compose_config({**SECRET_VALUES, "ROOMCAST_METRICS_TOKEN": ""})["services"]
    assert Settings.from_env(environment["api"]["environment"]).metrics_token is None


def test_services_start_after_a_successful_migration(spec):
    services = spec["services"]
    healthy = {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"] == {"postgres": healthy, "redis": healthy}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "beat", "flower"):
        assert services[name]["depends_on"] == {
            "postgres": healthy,
            "redis": healthy,
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["restart"] == "unless-stopped"


def _celery(argv: list[str]):
    """Parse a ``celery -A worker ...`` command with Celery's own command line; returns the
    subcommand's parsed parameters (a UsageError for anything it would refuse)."""
    from celery import Celery
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as cli

    assert argv[:3] == ["celery", "-A", "worker"], argv
    import worker

    assert isinstance(worker.app, Celery)
    obj = CLIContext(app=worker.app, no_color=True, workdir=None, quiet=True)
    parent = cli.make_context("celery", argv[1:4], resilient_parsing=True, obj=obj)
    subcommand = cli.commands[argv[3]]
    return subcommand.make_context(argv[3], argv[4:], parent=parent).params


def test_the_worker_and_beat_commands_parse_and_name_real_queues(spec):
    from worker import app

    declared = {queue.name for queue in app.conf.task_queues}
    worker = _celery(spec["services"]["worker"]["command"])
    assert worker["pool"].__module__ == "celery.concurrency.gevent"
    assert set(worker["queues"]) == declared == {"turns", "maintenance", "webhooks"}
    assert worker["concurrency"] >= 100
    beat = _celery(spec["services"]["beat"]["command"])
    assert beat["schedule"].startswith("/tmp/")  # writable in the container
    assert app.conf.beat_schedule


def test_the_api_command_is_gunicorn_on_the_app_factory(spec):
    from flask import Flask
    from gunicorn.config import Config
    from gunicorn.util import import_app

    assert "command" not in spec["services"]["api"]  # the image's CMD
    argv = dockerfile_cmd()
    assert argv[0] == "gunicorn"
    config = Config()
    args = config.parser().parse_args(argv[1:])
    for name, value in vars(args).items():
        if value is not None and name != "args":
            config.set(name.lower(), value)
    assert config.worker_class.__name__ == "GeventWorker"  # imports the worker class
    assert config.workers == 2 and config.reuse_port
    # gunicorn.conf.py: its hooks are ones gunicorn accepts (it checks their arguments).
    hooks = runpy.run_path(str(ROOT / args.config))
    for hook in ("on_starting", "child_exit", "on_exit"):
        config.set(hook, hooks[hook])
    assert args.args == ["api:create_app()"]
    assert isinstance(import_app(args.args[0]), Flask)


def test_the_flower_and_migrate_commands_parse(spec):
    from alembic.config import CommandLine, Config
    from alembic.script import ScriptDirectory
    from flower.options import default_options

    flower = spec["services"]["flower"]["command"]
    assert flower[:4] == ["celery", "-A", "worker", "flower"]
    _celery(flower)
    for option in flower[4:]:
        assert option.removeprefix("--").split("=")[0] in default_options, option

    migrate = spec["services"]["migrate"]["command"]
    assert migrate[0] == "alembic"
    args = CommandLine().parser.parse_args(migrate[1:])
    assert (args.cmd[0].__name__, args.revision) == ("upgrade", "head")
    assert ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()


def test_the_healthchecks_ask_what_exists(spec, app):
    services = spec["services"]
    api = services["api"]["healthcheck"]["test"]
    assert api[:3] == ["CMD", "python", "-c"]  # the image has no curl
    path = re.search(r"http://127\.0\.0\.1:8000(/[^']+)", api[3]).group(1)
    assert path == "/api/v1/health/ready"
    assert app.test_client().get(path).status_code == 200

    kind, command = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"  # a shell, for the container's $HOSTNAME
    ping = _celery(shlex.split(command.replace("$HOSTNAME", "worker-host")))
    assert ping["command"] == "ping"
    assert ping["destination"] == ["celery@worker-host"]  # this worker, not any worker

    from flower.urls import handlers

    flower = services["flower"]["healthcheck"]["test"]
    path = re.search(r"http://127\.0\.0\.1:5555(/[^']+)", flower[3]).group(1)
    routes = {h[0] if isinstance(h, tuple) else h.regex.pattern.rstrip("$") for h in handlers}
    assert path in routes
    for name in ("api", "worker", "flower"):
        check = services[name]["healthcheck"]
        assert check["timeout"] and check["interval"] and check["start_period"], name


def test_the_worker_is_bounded_and_stopped_warmly(spec):
    from models.tasking import TASK_TIME_LIMIT

    worker = spec["services"]["worker"]
    assert worker["mem_limit"]  # a gevent worker has no per-child cap (models/tasking.py)
    minutes = int(worker["stop_grace_period"].removesuffix("m"))
    assert minutes * 60 > TASK_TIME_LIMIT  # SIGKILL only after a running turn's hard limit
