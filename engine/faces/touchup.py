"""Touch-up and the toon look's faces: both work on the face's box only, weighted by its skin mask
(see `regions`), so eyes, brows, lips, hair and glasses outside the skin stay as they were."""

from __future__ import annotations

import cv2
import numpy as np

from ..effects.blend import blend_into
from ..media import yuv
from .regions import SkinMasks, extent, face_box

WORK_FACE_WIDTH = 96  # px: the face's width where touch-up does its filtering
# A 3-px bilateral there reaches ~1 % of the face's width: pores and fine lines, not a nostril.
# (128 px and 5 px looked the same and smoothed the skin alike, at four times the filter's cost.)


def touch_up(frame: np.ndarray, points: np.ndarray, amount: float, masks: SkinMasks | None = None) -> None:
    """Smooth the face's skin in place (an I420 ndarray): an edge-preserving (bilateral) filter of
    the luma, mixed in by `amount` (0..1) times the skin mask, over the face's box only.

    Both are made on a grid anchored to the face: its corner at the landmarks' top-left, the
    face ~WORK_FACE_WIDTH px wide on it (the cost stays flat with the face's size), so a face
    that only moves or the auto-frame crop only pans or zooms over keeps its mask (SkinMasks)
    and just the picture is resampled. The filtered luma and the mask come back to the box as
    8-bit planes and are mixed in, in place, in one pass (effects.blend); the filter's reach
    smooths a wrinkle and not the jaw line or a nostril."""
    if amount <= 0:
        return
    h, w = yuv.frame_size(frame)
    box = face_box(points, h, w)
    if box is None:
        return
    x0, y0, x1, y1 = box
    plane = yuv.planes(frame)[0]
    left, top, right, bottom = extent(points)[:4]
    face_w, face_h = right - left, bottom - top
    shrink = max(1.0, face_w / WORK_FACE_WIDTH)
    # The grid's corner, in frame pixels: a margin past the box's (which is face_box's 5 %, then
    # rounded out to even pixels) on every side.
    reach = 0.05 * max(face_w, face_h) + 3
    ox, oy = left - reach, top - reach
    size = (int((face_h + 2 * reach) / shrink) + 2, int((face_w + 2 * reach) / shrink) + 2)
    # Work pixel j's centre is at frame x = ox + (j + 0.5) * shrink (pixel centres at +0.5).
    to_frame = np.float32([[shrink, 0, ox + 0.5 * shrink - 0.5], [0, shrink, oy + 0.5 * shrink - 0.5]])
    small = cv2.warpAffine(plane, to_frame, size[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
    smooth = cv2.bilateralFilter(small, 3, 18 + 14 * amount, 2.0)
    local = (points - np.float32([ox, oy])) * np.float32(1 / shrink) - np.float32(0.5)
    masks = masks or SkinMasks()
    masks.drawn(local, size)
    # Box pixel u (frame x0 + u) in work pixels: (x0 + u + 0.5 - ox) / shrink - 0.5.
    to_work = np.float32([[1 / shrink, 0, (x0 + 0.5 - ox) / shrink - 0.5], [0, 1 / shrink, (y0 + 0.5 - oy) / shrink - 0.5]])
    box_size = (x1 - x0, y1 - y0)
    smooth = cv2.warpAffine(smooth, to_work, box_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)

    def place(mask: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(mask, to_work, box_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)

    weight = masks.placed((to_work.tobytes(), box_size), place)
    # `amount` scales the weights as they are mixed in: the placed weights serve every amount.
    blend_into(smooth, weight, min(256, round(amount * 256)), plane[y0:y1, x0:x1])


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
    weight = (masks or SkinMasks()).get_u8(points, box)
    y, u, v = yuv.planes(frame)
    for plane, scale, op in ((y, 1, cv2.MORPH_CLOSE), (u, 2, cv2.MORPH_OPEN), (v, 2, cv2.MORPH_CLOSE)):
        region = plane[y0 // scale : y1 // scale, x0 // scale : x1 // scale]
        k = max(3, size // scale) | 1
        changed = cv2.morphologyEx(region, op, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        mask = weight if scale == 1 else cv2.resize(weight, (region.shape[1], region.shape[0]),
                                                    interpolation=cv2.INTER_AREA)
        blend_into(changed, mask, 256, region)
