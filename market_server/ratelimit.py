"""Per-key request budgets (sliding one-minute window), answered with a clear 429."""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from protocol.errors import LearnwareError


class RateLimited(LearnwareError):
    code = "rate_limited"
    status = 429


class RateLimiter:
    """With ``store``, the budgets live in the database, so every worker (and every server on
    the same database) counts the same requests; without it, in this process only."""

    def __init__(self, per_minute: dict[str, int], store=None):
        self.per_minute = per_minute
        self.store = store
        self._hits: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _refuse(self, action: str, limit: int, wait: float) -> RateLimited:
        err = RateLimited(f"too many {action} requests from this key: the limit is {limit}"
                          f" per minute; retry in {wait:.0f} s", details=None)
        err.retry_after = wait
        return err

    def check(self, action: str, key_id: str) -> None:
        limit = self.per_minute.get(action, 0)
        if not limit:
            return
        if self.store is not None:
            wait = self.store.rate_hit(action, key_id, limit)
            if wait is not None:
                raise self._refuse(action, limit, wait)
            return
        now = time.monotonic()
        with self._lock:
            q = self._hits[(action, key_id)]
            while q and q[0] <= now - 60.0:
                q.popleft()
            if len(q) >= limit:
                raise self._refuse(action, limit, 60.0 - (now - q[0]))
            q.append(now)
