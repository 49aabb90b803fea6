"""Mask refinement: temporal smoothing, threshold or soft alpha, edge-aware feathering.

All of it runs at a reduced "work" resolution (a fifth of the frame's height: 144 rows at 720p,
the landscape model's own output), where it costs well under a millisecond; the compositor
upsamples the final alpha once.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..media import yuv
from . import fused

# Work resolution: the frame's height divided by this, but never below the model's output.
WORK_DIVISOR = 5


def work_size(frame_hw: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) at which masks are refined for a frame of `frame_hw`."""
    h, w = frame_hw
    wh = max(h // WORK_DIVISOR, min(model_hw[0], h))
    ww = max(1, round(w * wh / h))
    return wh, ww


class GuidedFilter:
    """Edge-preserving smoothing steered by a grey `guide` (He et al., 2010): the result follows
    the guide's edges, so a coarse mask snaps to the person's outline instead of blurring across
    it. The guide's own statistics need only the frame, so they are made once, up front (the
    pipeline makes them on a helper thread while the model runs)."""

    def __init__(self, guide: np.ndarray, radius: int, eps: float = 1e-3):
        """`guide`: float32 in [0, 1], the size of the masks to filter."""
        self.guide = guide
        self._ksize = (2 * radius + 1, 2 * radius + 1)
        self._mean = self._box(guide)
        self._var_eps = self._box(guide * guide) - self._mean * self._mean + eps

    def _box(self, x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, self._ksize, borderType=cv2.BORDER_REFLECT)

    def __call__(self, src: np.ndarray) -> np.ndarray:
        """`src` (float32, the guide's size) smoothed along the guide's edges."""
        mean_p = self._box(src)
        a = (self._box(self.guide * src) - self._mean * mean_p) / self._var_eps
        b = mean_p - a * self._mean
        return self._box(a) * self.guide + self._box(b)


def feather_radius(feather: int, work_height: int) -> int:
    """The guided filter's radius at work resolution for `feather`, which is given at 720p."""
    return max(1, round(feather * work_height / (720 / WORK_DIVISOR) / 2))


def frame_guide(
    frame: yuv.Frame, model_hw: tuple[int, int], feather: int, halvings: yuv.Halvings | None = None
) -> GuidedFilter:
    """The guided filter that feathers masks of a `model_hw` model by `feather` (pixels at 720p)
    for `frame`: its luma at work resolution, and that luma's statistics."""
    wh, ww = work_size(yuv.frame_size(frame), model_hw)
    luma = (halvings or yuv.Halvings(frame)).shrink(0, wh, ww)
    return GuidedFilter(luma.astype(np.float32) * np.float32(1.0 / 255.0), feather_radius(feather, wh))


# Steadiness: where the picture is still, the mask keeps its own last value (the model's output
# jitters with sensor noise); where the picture moved, the new one is taken at once (no lag). The
# motion is the luma's change at work resolution, in 8-bit levels, averaged over 3x3 pixels.
STILL_LEVELS = 1.5  # below this the pixel counts as still (noise)
MOVING_LEVELS = 6.0  # above this it counts as moving: the new mask is taken whole

# The model's probability rises over 2-3 of its pixels (10-15 px at 720p) around the edge;
# taken as alpha it puts a see-through ring of the old room around the person. It is steepened
# about a level a little above one half, so the edge sits on the person, not beyond.
EDGE_GAIN = 4.0
EDGE_LEVEL = 0.6


def steepen(probability: np.ndarray) -> np.ndarray:
    """The probability's edge made narrower and pulled onto the person (in place)."""
    probability -= EDGE_LEVEL
    probability *= EDGE_GAIN
    probability += 0.5
    return np.clip(probability, 0.0, 1.0, out=probability)


class MaskRefiner:
    """Turns a model's probability map into the alpha used for compositing. One per session:
    it holds the previous mask and luma for temporal smoothing."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._previous_luma: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = self._previous_luma = None

    def refine(
        self,
        probability: np.ndarray,
        frame: yuv.Frame,
        *,
        mode: str = "soft",
        threshold: float = 0.5,
        smoothing: float = 0.0,
        feather: int = 0,
        guide: GuidedFilter | None = None,
        halvings: yuv.Halvings | None = None,
    ) -> np.ndarray:
        """Alpha in [0, 1] (float32) at work resolution for `frame` (I420, see `yuv`).
        `guide`: `frame_guide(frame, ...)` for this `feather`, if already made; `halvings`: the
        frame's, if shared."""
        wh, ww = work_size(yuv.frame_size(frame), probability.shape[:2])
        alpha = cv2.resize(probability, (ww, wh), interpolation=cv2.INTER_LINEAR)
        if smoothing > 0.0 and mode == "soft" and feather == 0:
            return self._smooth_soft(alpha, frame, smoothing, halvings)

        if smoothing > 0.0:
            luma = self._luma(frame, (wh, ww), guide, halvings)
            previous = self._previous
            if previous is not None and previous.shape == alpha.shape:
                # alpha += keep * (previous - alpha), keep = smoothing where still, 0 where moving
                keep = self._keep(luma, smoothing)
                alpha += keep * (previous - alpha)
            self._previous_luma = luma
        self._previous = alpha.copy()

        if mode == "threshold":
            alpha = (alpha >= threshold).astype(np.float32)
        else:
            alpha = steepen(alpha)

        if feather > 0:
            if guide is None:
                guide = frame_guide(frame, probability.shape[:2], feather, halvings)
            alpha = guide(alpha)
        return np.clip(alpha, 0.0, 1.0, out=alpha)

    def _smooth_soft(self, alpha: np.ndarray, frame, smoothing: float, halvings) -> np.ndarray:
        """`refine`'s smoothing and steepening for a soft unfeathered mask, in one fused pass
        (the same arithmetic; the luma kept in 8 bits)."""
        luma = (halvings or yuv.Halvings(frame)).shrink(0, *alpha.shape)
        previous, previous_luma = self._previous, self._previous_luma
        kept = np.empty_like(alpha)
        if previous is None or previous.shape != alpha.shape or previous_luma is None or previous_luma.shape != luma.shape:
            kept[...] = alpha  # nothing to keep: the mask as it is, steepened
            self._previous, self._previous_luma = kept, luma
            return steepen(alpha)
        # The mean change over 3x3 pixels, from exact integer sums.
        motion = cv2.boxFilter(cv2.absdiff(luma, previous_luma.astype(np.uint8, copy=False)), cv2.CV_32F, (3, 3))
        fused.smooth_and_steepen(
            alpha, previous, motion, np.float32(STILL_LEVELS), np.float32(MOVING_LEVELS),
            np.float32(smoothing), np.float32(EDGE_LEVEL), np.float32(EDGE_GAIN), kept,
        )
        self._previous, self._previous_luma = kept, luma
        return alpha

    def _luma(self, frame, size, guide: GuidedFilter | None, halvings) -> np.ndarray:
        """The frame's luma at work resolution in 8-bit levels (the guide's, when there is one)."""
        if guide is not None and guide.guide.shape == size:
            return guide.guide * np.float32(255.0)
        return (halvings or yuv.Halvings(frame)).shrink(0, *size).astype(np.float32)

    def _keep(self, luma: np.ndarray, smoothing: float) -> np.ndarray:
        """Per pixel, the weight of the previous mask: `smoothing` where still, 0 where moving."""
        previous = self._previous_luma
        if previous is None or previous.shape != luma.shape:
            return np.zeros_like(luma)
        motion = cv2.blur(cv2.absdiff(luma, previous.astype(np.float32, copy=False)), (3, 3))
        still = np.clip((MOVING_LEVELS - motion) * (1.0 / (MOVING_LEVELS - STILL_LEVELS)), 0.0, 1.0)
        return still * np.float32(smoothing)
