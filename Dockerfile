FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY setup.cfg pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY models ./models
COPY serve.py ./
RUN pip install --no-cache-dir -e '.[ops]'
COPY alembic.ini ./
COPY migrations ./migrations
EXPOSE 8000
CMD ["gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--bind", "0.0.0.0:8000", "api:create_app()"]
