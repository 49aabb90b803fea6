"""Per-client rate limits: a token bucket per client address, for as many clients as fit."""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    """`burst` requests at once, then one per `per_s` seconds, per client key. The oldest
    clients are forgotten past `max_clients`, so the table stays bounded."""

    def __init__(self, burst: int, per_s: float, max_clients: int = 4096):
        self.burst, self.per_s, self.max_clients = burst, per_s, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when `key` may go now (and it is counted); else seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) * self.per_s
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
