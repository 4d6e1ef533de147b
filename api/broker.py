"""The API's task producer: tasks are sent by name, the worker's code is never imported."""

from __future__ import annotations

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError

from models.settings import Settings
from models.tasking import celery_config


def make_celery_client(settings: Settings) -> Celery:
    client = Celery("roomcast-api", set_as_current=False)
    client.conf.update(celery_config(settings))
    # Publish where the settings say: Celery would otherwise let the CELERY_BROKER_URL variable
    # win over explicit configuration.
    client.conf.broker_write_url = settings.broker_url
    return client


def check_broker(url: str, timeout: float = 2.0) -> None:
    """Raise if the broker at ``url`` does not answer within ``timeout`` seconds."""
    if url.startswith("memory://"):
        return  # in-process: reachable while this process runs
    # kombu connects lazily; a PING proves the Redis server really answers.
    connection = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        connection.ping()
    finally:
        connection.close()


def is_broker_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the broker cannot be reached now (kombu's or redis-py's word)."""
    return isinstance(exc, (KombuOperationalError, redis.ConnectionError, redis.TimeoutError))
