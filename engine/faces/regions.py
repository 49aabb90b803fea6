"""Regions of a face from its 468 landmarks: the skin (inside the face's outline, without the eyes,
brows and lips), as a soft mask over the face's bounding box.

The index lists are facts of the landmark model's topology (which output point is where on the
canonical face mesh).
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

# The face's outline, in order around it (forehead, temples, jaw, chin).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Parts that must stay sharp; each is filled as the convex hull of its points.
RIGHT_EYE = [7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246]
LEFT_EYE = [249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466]
RIGHT_BROW = [46, 52, 53, 55, 63, 65, 66, 70, 105, 107]
LEFT_BROW = [276, 282, 283, 285, 293, 295, 296, 300, 334, 336]
LIPS = [0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267,
        269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415]
KEEP_SHARP = (RIGHT_EYE, LEFT_EYE, RIGHT_BROW, LEFT_BROW, LIPS)


@njit("UniTuple(float64, 6)(float32[:, :])", nogil=True, cache=True)
def _extent(points):
    x0 = x1 = points[0, 0]
    y0 = y1 = points[0, 1]
    sx = sy = 0.0
    for i in range(points.shape[0]):
        x, y = points[i, 0], points[i, 1]
        x0, x1, y0, y1 = min(x0, x), max(x1, x), min(y0, y), max(y1, y)
        sx += x
        sy += y
    n = points.shape[0]
    return float(x0), float(y0), float(x1), float(y1), sx / n, sy / n


@njit("boolean(float32[:, :], float32[:, :], float64)", nogil=True, cache=True)
def _apart(a, b, tolerance):
    """Whether any coordinate of the points `a` is more than `tolerance` from `b`'s."""
    for i in range(a.shape[0]):
        if abs(a[i, 0] - b[i, 0]) > tolerance or abs(a[i, 1] - b[i, 1]) > tolerance:
            return True
    return False


def extent(points: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """The landmarks' (x0, y0, x1, y1) bounding box and their mean (cx, cy), in one pass (numpy
    takes a few microseconds a reduction, and the face stages want six of them per frame)."""
    return _extent(np.asarray(points, np.float32))


def face_box(points: np.ndarray, height: int, width: int, margin: float = 0.05) -> tuple[int, int, int, int] | None:
    """The landmarks' bounding box grown by `margin` of its size, clipped to the picture, with
    even corners (so it maps onto the chroma planes): (x0, y0, x1, y1), or None off-picture."""
    x0, y0, x1, y1 = extent(points)[:4]
    grow = margin * max(x1 - x0, y1 - y0)
    x0, y0 = max(0, int(x0 - grow) // 2 * 2), max(0, int(y0 - grow) // 2 * 2)
    x1, y1 = min(width, -(-int(x1 + grow + 1) // 2) * 2), min(height, -(-int(y1 + grow + 1) // 2) * 2)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1, y1


def skin_mask(points: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int] | None = None) -> np.ndarray:
    """float32 weights in [0, 1] over `box`: 1 on the face's skin, 0 on the eyes, brows and lips
    (each grown a little, so lashes and lip lines stay out too) and outside the outline, with
    soft edges. `size`: (height, width) to draw it at, when not the box's own (cheaper small)."""
    return skin_mask_u8(points, box, size).astype(np.float32) * np.float32(1 / 255)


def skin_mask_u8(points: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int] | None = None) -> np.ndarray:
    """`skin_mask` as uint8 weights (255 = 1), as it is drawn."""
    x0, y0, x1, y1 = box
    height, width = size or (y1 - y0, x1 - x0)
    scale = np.float32([width / (x1 - x0), height / (y1 - y0)])
    return draw_skin(((points - np.float32([x0, y0])) * scale), (height, width))


def draw_skin(local: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The skin mask (uint8, 255 = 1) of landmarks already in the (height, width) grid's pixels."""
    mask = np.zeros(size, np.uint8)
    fixed = np.round(local * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [fixed[FACE_OVAL]], 255, cv2.LINE_AA, shift=4)
    xs = local[:, 0]
    face_width = float(xs.max() - xs.min())
    grow = max(1, round(face_width * 0.025))
    sharp = np.zeros_like(mask)
    for part in KEEP_SHARP:
        cv2.fillConvexPoly(sharp, cv2.convexHull(fixed[part]), 255, cv2.LINE_AA, shift=4)
    sharp = cv2.dilate(sharp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    mask = cv2.subtract(mask, sharp)
    soft = max(3, round(face_width * 0.04)) | 1
    return cv2.GaussianBlur(mask, (soft, soft), 0)


class SkinMasks:
    """The skin mask for one stream, kept while the landmarks stay within half a pixel of where
    the kept mask was drawn for them, in the pixels it is drawn in (a still face; or, drawn
    anchored to the face as touch-up does, one that only moves or the auto-frame crop pans
    over): remade when they change. `get_u8` gives uint8 weights over a box (`skin_mask_u8`),
    `drawn` the mask of landmarks already in its grid."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._local: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._placed: tuple[tuple, np.ndarray] | None = None

    def drawn(self, local: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        local = np.asarray(local, np.float32)
        if size != self._key or self._local is None or _apart(local, self._local, 0.5):
            self._key, self._local, self._mask = size, local, draw_skin(local, size)
            self._placed = None
        return self._mask

    def placed(self, key: tuple, make) -> np.ndarray:
        """`make(mask)`, something made from the kept mask (touch-up's weights placed over the
        face's box), kept with it while `key` (how it was placed) stays: a still face's."""
        if self._placed is None or self._placed[0] != key:
            self._placed = (key, make(self._mask))
        return self._placed[1]

    def get_u8(self, points: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int] | None = None) -> np.ndarray:
        x0, y0, x1, y1 = box
        height, width = size or (y1 - y0, x1 - x0)
        scale = np.float32([width / (x1 - x0), height / (y1 - y0)])
        return self.drawn((points - np.float32([x0, y0])) * scale, (height, width))
