"""The few-step sampler's timesteps: `steps` UNet calls starting at `strength` of the noise range.

evenly spaced, trailing, starting at 1000*s - 1, e.g. steps=1, strength=0.5 -> [499]; steps=4,
strength=1.0 -> [999, 749, 499, 249]. For the `lcm` family they are snapped to LCM's training
grid (every 20th timestep: 19, 39, ..., 999).
"""

from __future__ import annotations

MAX_STEPS = 4


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    return steps


def check_strength(strength: float) -> float:
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return float(strength)


def timestep_schedule(
    steps: int, strength: float, num_train_timesteps: int = 1000, lcm_grid: int | None = None
) -> list[int]:
    """Descending timesteps for `steps` UNet calls starting at `strength` of the noise range.

    `lcm_grid` (LCM's `original_inference_steps`, 50) snaps them to the timesteps LCM was
    distilled on.
    """
    check_steps(steps)
    start = num_train_timesteps * check_strength(strength)
    timesteps = [max(0, round(start * (steps - i) / steps) - 1) for i in range(steps)]
    if lcm_grid:
        c = num_train_timesteps // lcm_grid
        timesteps = [max(c - 1, min(num_train_timesteps - 1, round((t + 1) / c) * c - 1)) for t in timesteps]
    return timesteps
