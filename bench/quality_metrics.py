"""Picture-quality figures of a person mask and a composited output against exact truth.

Masks are float32 alpha in [0, 1] at the frame's size; "the mask" of an alpha is alpha >= 0.5.
Figures over a clip are pooled over its frames (sums of counts, not means of per-frame ratios),
so frames where the person is small or gone weigh what their pixels weigh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 3  # px: a boundary pixel within this of the other boundary is a match
LAG_RANGE = 3  # frames either way
INSIDE, OUTSIDE = 0.99, 0.01  # the bands' alpha limits


def binary(alpha: np.ndarray) -> np.ndarray:
    return (np.asarray(alpha) >= 0.5).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask minus its 3x3 erosion (the frame's edge is not a boundary)."""
    mask = mask.astype(np.uint8)
    eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return (mask & (1 - eroded)).astype(bool)


def _distance_to(pixels: np.ndarray) -> np.ndarray:
    """Per pixel, the Euclidean distance to the nearest True pixel of `pixels` (inf without any)."""
    if not pixels.any():
        return np.full(pixels.shape, np.inf, np.float32)
    return cv2.distanceTransform((~pixels).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def disk(radius: int) -> np.ndarray:
    """The structuring element of the pixels within `radius` (Euclidean) of the centre."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_counts(predicted: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE) -> tuple[int, int, int, int]:
    """(predicted boundary pixels matched, predicted boundary pixels, true boundary pixels
    matched, true boundary pixels) for two binary masks: matched = within `tolerance` px of the
    other mask's boundary."""
    bp, bt = boundary(predicted), boundary(truth)
    near = disk(tolerance)
    matched_p = int((bp & cv2.dilate(bt.astype(np.uint8), near).astype(bool)).sum())
    matched_t = int((bt & cv2.dilate(bp.astype(np.uint8), near).astype(bool)).sum())
    return matched_p, int(bp.sum()), matched_t, int(bt.sum())


def f_score(matched_p: int, total_p: int, matched_t: int, total_t: int) -> float:
    """Boundary F from pooled counts: 2PR / (P + R); 1 when neither mask has a boundary."""
    if total_p == 0 and total_t == 0:
        return 1.0
    precision = matched_p / total_p if total_p else 0.0
    recall = matched_t / total_t if total_t else 0.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two binary masks (1 when both are empty)."""
    p, t = predicted.astype(bool), truth.astype(bool)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def centroid(alpha: np.ndarray) -> np.ndarray | None:
    """(x, y) of the mask's centre of area, None when it is empty."""
    ys, xs = np.nonzero(binary(alpha))
    return None if xs.size == 0 else np.array([xs.mean(), ys.mean()])


def lag(predicted: list[np.ndarray | None], truth: list[np.ndarray | None], moving: list[bool],
        limit: int = LAG_RANGE) -> int:
    """The frame offset d in [-limit, limit] for which the predicted centroid at t best matches the
    true one at t - d over the moving frames (mean distance): d > 0 means the mask follows d
    frames late. Ties go to the smaller |d|; 0 when nothing moves."""
    best, best_error = 0, np.inf
    for d in sorted(range(-limit, limit + 1), key=abs):
        errors = [
            np.linalg.norm(predicted[t] - truth[t - d])
            for t in range(len(truth))
            if moving[t] and 0 <= t - d < len(truth) and predicted[t] is not None and truth[t - d] is not None
        ]
        if errors and np.mean(errors) < best_error - 1e-9:
            best, best_error = d, float(np.mean(errors))
    return best


def bands(alpha: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(inner, outer) band of `width` px from the true edge: inner where alpha >= .99 within
    `width` of the background (alpha < .5), outer where alpha <= .01 within `width` of the person."""
    person = alpha >= 0.5
    inner = (alpha >= INSIDE) & (_distance_to(~person) <= width)
    outer = (alpha <= OUTSIDE) & (_distance_to(person) <= width)
    return inner, outer


@dataclass
class Pooled:
    """A mean absolute difference accumulated over many frames' pixels."""

    total: float = 0.0
    count: int = 0

    def add(self, a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> None:
        """Adds |a - b| over the pixels `where` is True (all without it)."""
        if where is None:
            self.total += float(cv2.absdiff(a, b).sum(dtype=np.float64))
            self.count += a.size
        elif where.any():
            self.total += float(np.abs(a[where].astype(np.float32) - b[where].astype(np.float32)).sum())
            self.count += int(where.sum()) * (a.shape[-1] if a.ndim == 3 else 1)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class MaskFigures:
    """The mask's figures over a clip, fed frame by frame."""

    intersection: int = 0
    union: int = 0
    abs_error: Pooled = field(default_factory=Pooled)
    boundary: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    flicker: Pooled = field(default_factory=Pooled)
    centroids: list = field(default_factory=list)
    true_centroids: list = field(default_factory=list)
    moving: list = field(default_factory=list)
    _previous: np.ndarray | None = None

    def add(self, alpha: np.ndarray, truth: np.ndarray, moving: bool) -> None:
        p, t = binary(alpha), binary(truth)
        self.intersection += int((p & t).sum())
        self.union += int((p | t).sum())
        self.abs_error.add(alpha, truth)
        for i, n in enumerate(boundary_counts(p, t)):
            self.boundary[i] += n
        if self._previous is not None and not moving:
            self.flicker.add(alpha, self._previous)
        self._previous = alpha
        self.centroids.append(centroid(alpha))
        self.true_centroids.append(centroid(truth))
        self.moving.append(moving)

    def result(self) -> dict[str, float | int | None]:
        return {
            "iou": 1.0 if self.union == 0 else self.intersection / self.union,
            "alpha_error": self.abs_error.mean,
            "boundary_f": f_score(*self.boundary),
            "flicker_x1e3": None if self.flicker.mean is None else self.flicker.mean * 1e3,
            "lag_frames": lag(self.centroids, self.true_centroids, self.moving),
        }


@dataclass
class BandFigure:
    """An output's mean abs difference (8-bit levels, RGB) from a reference in the inner and the
    outer band; the figure is the mean of the two."""

    inner: Pooled = field(default_factory=Pooled)
    outer: Pooled = field(default_factory=Pooled)

    def add(self, output: np.ndarray, inner_reference: np.ndarray, outer_reference: np.ndarray,
            inner: np.ndarray, outer: np.ndarray) -> None:
        self.inner.add(output, inner_reference, inner)
        self.outer.add(output, outer_reference, outer)

    def result(self) -> dict[str, float | None]:
        i, o = self.inner.mean, self.outer.mean
        both = None if i is None or o is None else (i + o) / 2
        return {"levels": both, "inner": i, "outer": o}
