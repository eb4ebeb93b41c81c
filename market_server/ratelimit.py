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
    def __init__(self, per_minute: dict[str, int]):
        self.per_minute = per_minute
        self._hits: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, action: str, key_id: str) -> None:
        limit = self.per_minute.get(action, 0)
        if not limit:
            return
        now = time.monotonic()
        with self._lock:
            q = self._hits[(action, key_id)]
            while q and q[0] <= now - 60.0:
                q.popleft()
            if len(q) >= limit:
                wait = 60.0 - (now - q[0])
                raise RateLimited(f"too many {action} requests from this key: the limit is {limit}"
                                  f" per minute; retry in {wait:.0f} s", details=None)
            q.append(now)
