"""Wall time per stage, for pipelines whose stages may run on an asynchronous device."""

from __future__ import annotations

import time
from typing import Callable


class StageClock:
    """Adds the time since the previous lap to `laps[name]` (a stage timed twice, or begun by
    someone else, sums). `sync` (a CUDA stream's or device's synchronize) runs first, so each
    stage gets its own time, not a later one's."""

    def __init__(self, laps: dict[str, float], sync: Callable[[], None] | None = None):
        self.laps = laps
        self._sync = sync
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self._sync is not None:
            self._sync()  # costs microseconds
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now
