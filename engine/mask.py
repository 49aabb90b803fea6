"""Mask refinement: temporal smoothing, threshold or soft alpha, edge-aware feathering.

All of it runs at a reduced "work" resolution (a fifth of the frame's height: 144 rows at 720p,
the landscape model's own output), where it costs well under a millisecond; the compositor
upsamples the final alpha once.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import yuv

# Work resolution: the frame's height divided by this, but never below the model's output.
WORK_DIVISOR = 5


def work_size(frame_hw: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) at which masks are refined for a frame of `frame_hw`."""
    h, w = frame_hw
    wh = max(h // WORK_DIVISOR, min(model_hw[0], h))
    ww = max(1, round(w * wh / h))
    return wh, ww


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float = 1e-3) -> np.ndarray:
    """Edge-preserving smoothing of `src` steered by the grey `guide` (He et al., 2010).

    Both are float32 in [0, 1] of one size. The result follows the guide's edges, so a coarse
    mask snaps to the person's outline instead of blurring across it.
    """
    ksize = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


class MaskRefiner:
    """Turns a model's probability map into the alpha used for compositing. One per session:
    it holds the previous mask for temporal smoothing."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def refine(
        self,
        probability: np.ndarray,
        frame: yuv.Frame,
        *,
        mode: str = "soft",
        threshold: float = 0.5,
        smoothing: float = 0.0,
        feather: int = 0,
    ) -> np.ndarray:
        """Alpha in [0, 1] (float32) at work resolution for `frame` (I420, see `yuv`)."""
        wh, ww = work_size(yuv.frame_size(frame), probability.shape[:2])
        alpha = cv2.resize(probability, (ww, wh), interpolation=cv2.INTER_LINEAR)

        if smoothing > 0.0 and self._previous is not None and self._previous.shape == alpha.shape:
            alpha = cv2.addWeighted(self._previous, smoothing, alpha, 1.0 - smoothing, 0.0)
        self._previous = alpha

        if mode == "threshold":
            alpha = (alpha >= threshold).astype(np.float32)

        if feather > 0:
            # Radius is given at 720p; scale it to this work resolution.
            radius = max(1, round(feather * wh / (720 / WORK_DIVISOR) / 2))
            luma = yuv.shrink(yuv.planes(frame)[0], wh, ww)
            guide = luma.astype(np.float32) * (1.0 / 255.0)
            alpha = guided_filter(guide, alpha, radius)
        return np.clip(alpha, 0.0, 1.0, out=alpha)
