"""Touch-up and the toon look's faces: both work on the face's box only, weighted by its skin mask
(see `regions`), so eyes, brows, lips, hair and glasses outside the skin stay as they were."""

from __future__ import annotations

import cv2
import numpy as np

from ..effects.blend import blend_plane
from ..media import yuv
from .regions import SkinMasks, face_box

WORK_FACE_WIDTH = 128  # px: the face's width where touch-up does its filtering


def _blend_into(plane: np.ndarray, changed: np.ndarray, weight: np.ndarray) -> None:
    """plane = weight * changed + (1 - weight) * plane, in place (weight float32 in [0, 1])."""
    plane[...] = cv2.blendLinear(changed, plane, weight, 1 - weight)


def touch_up(frame: np.ndarray, points: np.ndarray, amount: float, masks: SkinMasks | None = None) -> None:
    """Smooth the face's skin in place (an I420 ndarray): an edge-preserving (bilateral) filter of
    the luma, mixed in by `amount` (0..1) times the skin mask. Both are made where the face is
    ~128 px wide (the cost stays flat with the face's size) and scaled back as 8-bit planes, then
    mixed into the face's box in one pass (effects.blend); the filter's reach smooths a wrinkle
    and not the jaw line or a nostril."""
    if amount <= 0:
        return
    h, w = yuv.frame_size(frame)
    box = face_box(points, h, w)
    if box is None:
        return
    x0, y0, x1, y1 = box
    luma = yuv.planes(frame)[0][y0:y1, x0:x1]
    shrink = max(1.0, float(np.ptp(points[:, 0])) / WORK_FACE_WIDTH)
    size = (max(8, round(luma.shape[0] / shrink)), max(8, round(luma.shape[1] / shrink)))
    small = cv2.resize(luma, size[::-1], interpolation=cv2.INTER_LINEAR) if shrink > 1 else luma
    smooth = cv2.bilateralFilter(small, 5, 18 + 14 * amount, 3.0)
    weight = (masks or SkinMasks()).get_u8(points, box, size)
    if amount < 1:
        weight = cv2.convertScaleAbs(weight, alpha=amount)
    if shrink > 1:
        smooth = cv2.resize(smooth, (luma.shape[1], luma.shape[0]), interpolation=cv2.INTER_LINEAR)
        weight = cv2.resize(weight, (luma.shape[1], luma.shape[0]), interpolation=cv2.INTER_LINEAR)
    mixed = np.empty_like(smooth)  # apart from the inputs: an overlapping output does not vectorise
    blend_plane(smooth, luma, weight, mixed)
    luma[...] = mixed


def clean_toon_face(frame: np.ndarray, points: np.ndarray, masks: SkinMasks | None = None) -> None:
    """Take the toon look's dark outlines off the face's skin, in place: a grey closing (dilate,
    then erode) of the luma removes lines thinner than its kernel, and the skin mask limits it to
    the skin, so the eyes, brows, lips and the face's outline keep theirs. The outlines also
    pulled the skin's colour toward grey; the same on the chroma planes undoes that (skin has
    red above grey and blue below it: V is closed, U opened)."""
    h, w = yuv.frame_size(frame)
    box = face_box(points, h, w)
    if box is None:
        return
    x0, y0, x1, y1 = box
    size = max(3, round(float(np.ptp(points[:, 0])) * 0.07)) | 1
    weight = (masks or SkinMasks()).get(points, box)
    y, u, v = yuv.planes(frame)
    for plane, scale, op in ((y, 1, cv2.MORPH_CLOSE), (u, 2, cv2.MORPH_OPEN), (v, 2, cv2.MORPH_CLOSE)):
        region = plane[y0 // scale : y1 // scale, x0 // scale : x1 // scale]
        k = max(3, size // scale) | 1
        changed = cv2.morphologyEx(region, op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        mask = weight if scale == 1 else cv2.resize(weight, (region.shape[1], region.shape[0]),
                                                    interpolation=cv2.INTER_AREA)
        _blend_into(region, changed, mask)
