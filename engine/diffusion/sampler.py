"""The few-step sampler: its timesteps, and its step maths for a whole batch at once.

Timesteps: `steps` UNet calls starting at `strength` of the noise range, evenly spaced,
trailing, starting at 1000*s - 1, e.g. steps=1, strength=0.5 -> [499]; steps=4, strength=1.0 ->
[999, 749, 499, 249]. For the `lcm` family they are snapped to LCM's training grid (every 20th
timestep: 19, 39, ..., 999).

Step maths (`Sampler`): one step at timestep t turns the noisy latent x_t into a clean estimate
x0 = (x_t - sqrt(1-a_t) eps) / sqrt(a_t) (epsilon prediction) or x0 = sqrt(a_t) x_t -
sqrt(1-a_t) v (v prediction), where a_t is the scheduler's `alphas_cumprod`; the `lcm` family
mixes x_t back in with its boundary-condition weights, x0' = c_skip(t) x_t + c_out(t) x0. The
per-timestep coefficients are stacked once into tensors indexed by t, so a batch whose elements
sit at different timesteps (several streams, or one stream's stream batch) takes one gather and
one vectorised expression, as diffusers' schedulers do. A prediction type other than these two
is refused, not treated as epsilon.
"""

from __future__ import annotations

import torch

MAX_STEPS = 4
PREDICTION_TYPES = ("epsilon", "v_prediction")


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


class Sampler:
    """The step maths of one scheduler config, for batches whose elements each have their own
    timestep, noise and guidance. `scheduler`: a diffusers DDPM-family scheduler (its betas,
    prediction type and, for `lcm`, its boundary-condition scalings are read once)."""

    def __init__(self, scheduler, family: str, device: torch.device, dtype: torch.dtype):
        config = scheduler.config
        self.prediction = config.get("prediction_type", "epsilon")
        if self.prediction not in PREDICTION_TYPES:
            raise ValueError(f"the scheduler predicts {self.prediction!r}; this sampler knows "
                             f"{', '.join(PREDICTION_TYPES)}")
        self.family = family
        self.lcm_grid = config.get("original_inference_steps", 50) if family == "lcm" else None
        alphas = scheduler.alphas_cumprod.to(torch.float64)
        self.num_train_timesteps = len(alphas)
        # Stacked once: one row per training timestep, gathered per batch element.
        table = [alphas.sqrt(), (1.0 - alphas).sqrt()]
        if family == "lcm":
            scalings = [scheduler.get_scalings_for_boundary_condition_discrete(t) for t in range(len(alphas))]
            table += [torch.tensor([float(s) for s, _ in scalings], dtype=torch.float64),
                      torch.tensor([float(o) for _, o in scalings], dtype=torch.float64)]
        else:
            table += [torch.zeros_like(alphas), torch.ones_like(alphas)]
        self._table = torch.stack(table, dim=1).to(device, dtype)  # [T, 4]: sqrt a, sqrt 1-a, c_skip, c_out

    def schedule(self, steps: int, strength: float) -> list[int]:
        return timestep_schedule(steps, strength, self.num_train_timesteps, self.lcm_grid)

    def _coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = self._table[timesteps]  # [N, 4]
        return tuple(rows[:, i].view(-1, 1, 1, 1) for i in range(4))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t for each element: sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        sa, sb, _, _ = self._coefficients(timesteps)
        return sa * x0 + sb * noise

    def step(self, x: torch.Tensor, model_out: torch.Tensor, timesteps: torch.Tensor,
             noise: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Clean estimates for a batch: element i at timesteps[i], made with noise[i], under
        residual self-negative guidance guidance[i] (1 = off; epsilon prediction only)."""
        sa, sb, c_skip, c_out = self._coefficients(timesteps)
        if self.prediction == "epsilon":
            g = guidance.to(model_out.dtype).view(-1, 1, 1, 1)
            model_out = torch.where(g != 1.0, noise + g * (model_out - noise), model_out)
            x0 = (x - sb * model_out) / sa
        else:
            x0 = sa * x - sb * model_out
        if self.family == "lcm":
            x0 = c_skip * x + c_out * x0
        return x0
