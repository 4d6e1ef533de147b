"""The Celery worker: ``celery -A worker worker`` runs turns and maintenance tasks."""

from .app import app

__all__ = ["app"]
