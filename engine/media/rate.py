"""Events per second over a short recent window."""

from __future__ import annotations

import threading
from collections import deque


class RateMeter:
    """Events per second over the last `horizon_s` seconds; ticks and reads may come from
    different threads."""

    def __init__(self, horizon_s: float = 2.0):
        self._times: deque[float] = deque()
        self._horizon = horizon_s
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._forget(now)

    def rate(self, now: float) -> float:
        with self._lock:
            self._forget(now)
            if len(self._times) < 2:
                return 0.0
            return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] > self._horizon:
            self._times.popleft()
