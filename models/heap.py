"""The garbage collector in the long-running processes (API, worker, serve.py).

A full collection walks every object the process holds, and an API process holds some 200,000
from its imports and its app alone: each full collection took 100-120 ms, while every greenlet
of the process waited (a request measured up to 1 s during a burst of a thousand long-polls
answered at once). Frozen once the process is ready, those objects are not walked again.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Move every object alive now out of the collector's reach (they live as long as the
    process anyway); collections then walk only what was made since."""
    gc.collect()
    gc.freeze()
