"""The shipped processes freeze what they hold once started (models/heap.py): full garbage
collections then walk only what was made since, not the 200,000 objects of the app."""

from __future__ import annotations

import gc
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process's objects go back to the collector


def test_freezing_takes_the_objects_alive_out_of_collections(unfrozen):
    from models.heap import freeze_startup_objects

    kept = [object() for _ in range(1000)]
    freeze_startup_objects()
    assert gc.get_freeze_count() >= len(kept)


def test_gunicorns_workers_freeze_once_the_app_is_loaded(unfrozen):
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert gc.get_freeze_count() == 0
    hooks["post_worker_init"](object())
    assert gc.get_freeze_count() > 0


def test_a_celery_worker_freezes_once_set_up(unfrozen):
    from celery.signals import celeryd_after_setup

    import worker.app  # noqa: F401  (connects its handlers)

    assert gc.get_freeze_count() == 0
    celeryd_after_setup.send(sender="celery@test", instance=None, conf=None)
    assert gc.get_freeze_count() > 0
