"""How a background picture fills a frame of another shape.

cover    scaled to fill the frame, the overflow cropped equally from both sides
contain  scaled to fit inside the frame whole, the bars around it in a solid colour
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from ..media import yuv

Fit = Literal["cover", "contain"]
FITS: tuple[str, ...] = Fit.__args__  # type: ignore[attr-defined]


def scaled_size(height: int, width: int, frame_h: int, frame_w: int, fit: str) -> tuple[int, int]:
    """(h, w) a `height` x `width` picture is scaled to before it is cropped (cover) or
    surrounded by bars (contain) to make a `frame_h` x `frame_w` frame."""
    pick = max if fit == "cover" else min
    scale = pick(frame_h / height, frame_w / width)
    sh, sw = round(height * scale), round(width * scale)
    if fit == "cover":
        return max(frame_h, sh), max(frame_w, sw)
    return max(1, min(frame_h, sh)), max(1, min(frame_w, sw))


def place(scaled_rgb: np.ndarray, frame_h: int, frame_w: int, colour: tuple[int, int, int]) -> np.ndarray:
    """An I420 frame of (frame_h, frame_w) with `scaled_rgb` centred on it: cropped where it is
    larger, on bars of `colour` where it is smaller."""
    sh, sw = scaled_rgb.shape[:2]
    if (sh, sw) == (frame_h, frame_w):
        return yuv.from_rgb(np.ascontiguousarray(scaled_rgb))
    canvas = np.empty((frame_h, frame_w, 3), np.uint8)
    canvas[...] = colour
    # Centre along each axis: crop when the picture overflows, pad when it falls short.
    src_top, dst_top = max(0, (sh - frame_h) // 2), max(0, (frame_h - sh) // 2)
    src_left, dst_left = max(0, (sw - frame_w) // 2), max(0, (frame_w - sw) // 2)
    rows, cols = min(sh, frame_h), min(sw, frame_w)
    canvas[dst_top : dst_top + rows, dst_left : dst_left + cols] = \
        scaled_rgb[src_top : src_top + rows, src_left : src_left + cols]
    return yuv.from_rgb(canvas)


def fit_image(image_rgb: np.ndarray, frame_h: int, frame_w: int, fit: str = "cover",
              colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """`image_rgb` made into an I420 frame of (frame_h, frame_w) by `fit`; `colour` fills the
    bars of `contain`."""
    ih, iw = image_rgb.shape[:2]
    sh, sw = scaled_size(ih, iw, frame_h, frame_w, fit)
    interpolation = cv2.INTER_AREA if sh < ih else cv2.INTER_LINEAR
    scaled = image_rgb if (sh, sw) == (ih, iw) else cv2.resize(image_rgb, (sw, sh), interpolation=interpolation)
    return place(scaled, frame_h, frame_w, colour)
