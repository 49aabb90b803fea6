"""Effects on I420 frames (see `yuv`). Pure functions of ndarrays: no WebRTC, no state."""

from __future__ import annotations

import math

import cv2
import numpy as np

from . import yuv
from .blend import blend_plane


def pow2_factor(limit: float) -> int:
    """The largest of 1, 2, 4, 8 not above `limit`: OpenCV's area resize is fast at these."""
    factor = 1
    while factor * 2 <= min(limit, 8):
        factor *= 2
    return factor


def composite(foreground: yuv.Frame, background: yuv.Frame, alpha: np.ndarray) -> np.ndarray:
    """foreground * alpha + background * (1 - alpha), plane by plane.

    `alpha` is float32 in [0, 1] at any resolution; it is scaled once for luma and once for
    the half-size chroma planes, as 8-bit weights (the result is within 1 of the exact blend,
    and exact where alpha is 0 or 1), and each plane is blended in one pass (see `blend`).
    """
    h, w = yuv.frame_size(foreground)
    if yuv.frame_size(background) != (h, w):
        raise ValueError(f"background is {yuv.frame_size(background)}, foreground {(h, w)}")
    out = yuv.empty(h, w)
    alpha8 = cv2.convertScaleAbs(alpha, alpha=255.0)
    luma_weight = cv2.resize(alpha8, (w, h), interpolation=cv2.INTER_LINEAR)
    chroma_weight = cv2.resize(alpha8, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
    for i, (f, b, o) in enumerate(zip(yuv.planes(foreground), yuv.planes(background), yuv.planes(out))):
        blend_plane(f, b, luma_weight if i == 0 else chroma_weight, o)
    return out


def stack_blur_size(sigma: float) -> int:
    """The odd kernel size of a stack blur with the standard deviation of Gaussian `sigma`.

    A stack blur of radius r weighs offset i by r + 1 - |i|, a variance of r (r + 2) / 6.
    """
    radius = max(1, round(math.sqrt(1.0 + 6.0 * sigma * sigma) - 1.0))
    return 2 * radius + 1


def blurred(frame: yuv.Frame, sigma: float, halvings: yuv.Halvings | None = None) -> np.ndarray:
    """A Gaussian-like blur of the whole frame, `sigma` in pixels at 720p (scaled with height).

    Blurs a downscaled copy and scales it back: a large blur hides the difference and it costs a
    small fraction of a full-resolution blur. OpenCV's stack blur stands in for the Gaussian at
    the same spread: within one grey level on average, at half the cost. `halvings`: the frame's,
    when shared with others who shrink it.
    """
    h, w = yuv.frame_size(frame)
    sigma = sigma * h / 720.0
    out = yuv.empty(h, w)
    halvings = halvings or yuv.Halvings(frame)
    for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
        plane_sigma = sigma if i == 0 else sigma / 2  # chroma planes are half size
        factor = pow2_factor(plane_sigma / 2)
        ph, pw = src.shape
        small = halvings.shrink(i, max(1, ph // factor), max(1, pw // factor))
        ksize = stack_blur_size(max(plane_sigma / factor, 0.5))
        small = cv2.stackBlur(small, (ksize, ksize))
        cv2.resize(small, (pw, ph), dst=dst, interpolation=cv2.INTER_LINEAR)
    return out


def solid(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """An I420 frame of one colour."""
    out = yuv.empty(height, width)
    for plane, value in zip(yuv.planes(out), yuv.colour(rgb)):
        plane[...] = value
    return out


def cover(image_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale and centre-crop an RGB image to fill (height, width) without distortion; I420 out."""
    ih, iw = image_rgb.shape[:2]
    scale = max(height / ih, width / iw)
    rh, rw = max(height, round(ih * scale)), max(width, round(iw * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (rw, rh), interpolation=interpolation)
    top, left = (rh - height) // 2, (rw - width) // 2
    return yuv.from_rgb(np.ascontiguousarray(resized[top : top + height, left : left + width]))


def model_input(frame: yuv.Frame, height: int, width: int, halvings: yuv.Halvings | None = None) -> np.ndarray:
    """The frame scaled to a model's input size as RGB uint8 (scaled in I420: cheap)."""
    return yuv.to_rgb(yuv.resize(frame, height, width, halvings=halvings))


def toon(frame: yuv.Frame, smoothing: int = 2, edges: float = 0.6) -> np.ndarray:
    """A model-free cartoon look: edge-preserving smoothing, flattened colours, dark outlines.

    Works at half resolution (bilateral filtering is the cost) and scales back.
    """
    h, w = yuv.frame_size(frame)
    sh, sw = (h // 4) * 2, (w // 4) * 2  # half size, kept even for I420
    small = yuv.to_rgb(yuv.resize(frame, sh, sw))
    for _ in range(smoothing):
        small = cv2.bilateralFilter(small, 5, 40, 5)
    # Flatten colours into bands of 24 levels: the poster look.
    flat = (small // 24) * 24 + 12
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    outline = cv2.adaptiveThreshold(
        cv2.medianBlur(grey, 5), 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4
    )
    # outline is 255 away from edges and 0 on them; darken edges by `edges`.
    keep = 1.0 - edges * (1.0 - outline.astype(np.float32) / 255.0)
    out = (flat.astype(np.float32) * keep[..., None]).astype(np.uint8)
    return yuv.resize(yuv.from_rgb(out), h, w, interpolation=cv2.INTER_LINEAR)
