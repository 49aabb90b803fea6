"""The budget controller: keeps a session's compute inside its frame budget.

It watches how long each frame took and walks a quality ladder, one rung at a time, with
hysteresis: down fast when frames run over, up slowly once there is clear headroom.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Quality:
    name: str
    feather: bool = True  # edge-aware mask refinement
    mask_every: int = 1  # run the model on every n-th frame, reuse its mask in between
    toon_passes: int = 5  # cap on the toon effect's smoothing passes


LADDER = (
    Quality("full"),
    Quality("no-feather", feather=False),
    Quality("lean", feather=False, toon_passes=1),
    Quality("mask-every-2nd", feather=False, toon_passes=1, mask_every=2),
)


def _percentile(values, q: float) -> float:
    """numpy's default (linear) percentile of a few values."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class BudgetController:
    def __init__(self, fps: float = 30.0, over: float = 0.8, under: float = 0.45, window: int = 30):
        self.budget_s = 1.0 / fps
        self._over, self._under = over, under
        self._times: deque[float] = deque(maxlen=window)
        self.level = 0

    @property
    def quality(self) -> Quality:
        return LADDER[self.level]

    def set_fps(self, fps: float) -> None:
        if fps > 0:
            self.budget_s = 1.0 / fps

    def observe(self, compute_s: float) -> None:
        """Record one frame's compute time and move on the ladder if warranted."""
        times = self._times
        times.append(compute_s)
        # Plain Python on at most `window` numbers: numpy's percentile cost more per frame than
        # sorting them does.
        # Down: the last few frames are over budget (react within ~5 frames).
        if len(times) >= 5 and sorted(itertools.islice(times, len(times) - 5, None))[2] > self._over * self.budget_s:
            self._move(+1)
        # Up: a whole window well inside the budget (hysteresis: slow to trust headroom).
        elif self.level > 0 and len(times) == times.maxlen and _percentile(times, 90) < self._under * self.budget_s:
            self._move(-1)

    def _move(self, step: int) -> None:
        level = min(max(self.level + step, 0), len(LADDER) - 1)
        if level != self.level:
            self.level = level
            self._times.clear()  # judge the new rung on its own frames
