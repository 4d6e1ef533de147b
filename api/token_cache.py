"""A short-lived, per-process cache of verified bearer tokens.

Reading the token row was a third of what a poll cost. A cached token is trusted for
``ttl`` seconds: a revocation made by another process is seen within that bound, one made by
this process at once (it drops the entry). Expiry is not cached: callers check ``expires_at``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

# Plenty for the live tokens of one process; bounds the memory a flood of tokens can take.
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class VerifiedToken:
    token_id: int
    user_id: int
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCache:
    """Verified tokens by the SHA-256 of their secret, each for ``ttl`` seconds (0: none)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # Insertion order is expiry order (one TTL for all): the first entry goes first.
        self._entries: dict[str, tuple[float, VerifiedToken]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> VerifiedToken | None:
        with self._lock:
            found = self._entries.get(token_hash)
            if found is None:
                return None
            if found[0] <= self._clock():
                del self._entries[token_hash]
                return None
            return found[1]

    def put(self, token_hash: str, token: VerifiedToken) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries.pop(token_hash, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[token_hash] = (self._clock() + self.ttl, token)

    def discard(self, token_hash: str) -> None:
        with self._lock:
            self._entries.pop(token_hash, None)

    def __len__(self) -> int:
        return len(self._entries)
