"""Where the stylized picture goes: the `diffusion` effect's modes, on I420 frames.

Pure numpy / OpenCV, no torch: the pipeline calls these with the newest picture the `Stylizer` made.

    frame       the whole frame is the stylized image
    background  the background is stylized; the person keeps the camera's own pixels
    person      the person is stylized; the background is the camera's own pixels
    backdrop    a generated image (txt2img, made once) behind the real person

`stylized_rgb` for the first three modes is the img2img output of the *whole frame* resized to
the diffusion resolution (`camfx.engine.media.yuv.model_input` does that), so it is stretched back
over the whole frame and stays aligned with the camera picture whatever the aspect ratios. The
`backdrop` image is not aligned with anything: it is scaled and centre-cropped to cover the frame
without distortion (`effects.cover`).

`alpha` is the person mask, float32 in [0, 1] at any resolution (1 = person), as the refine
stage produces it. Where alpha is exactly 1 (or 0) the blend gives the camera's pixels exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..media import yuv
from . import filters as effects

MODES = ("frame", "background", "person", "backdrop")


def stylized_frame(stylized_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The stylized RGB image stretched over a (height, width) I420 frame.

    Converted to I420 at the model's resolution (its sides are multiples of 8, so even) and
    scaled plane by plane: a quarter of the bytes of scaling RGB at the frame's size.
    """
    h, w = stylized_rgb.shape[:2]
    small = yuv.from_rgb(np.ascontiguousarray(stylized_rgb[: h - h % 2, : w - w % 2]))
    if (h - h % 2, w - w % 2) == (height, width):
        return small
    return yuv.resize(small, height, width, interpolation=cv2.INTER_LINEAR)


def layer(mode: str, stylized_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The stylized picture as an I420 layer of the frame's size (worth keeping while the same
    picture is composited onto many camera frames)."""
    if mode not in MODES:
        raise ValueError(f"unknown diffusion mode {mode!r}; valid modes: {', '.join(MODES)}")
    if mode == "backdrop":
        return effects.cover(stylized_rgb, height, width)
    return stylized_frame(stylized_rgb, height, width)


def blend(mode: str, frame: np.ndarray, styled: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The output I420 frame for `mode` from the camera `frame` and the `layer` it goes with."""
    if mode == "frame":
        return styled
    if alpha is None:
        raise ValueError(f"diffusion mode {mode!r} needs a person mask (alpha)")
    alpha = np.asarray(alpha, dtype=np.float32)
    if mode == "person":
        return effects.composite(styled, frame, alpha)
    # background and backdrop: the person (alpha = 1) keeps the camera's pixels.
    return effects.composite(frame, styled, alpha)


def compose(
    mode: str, frame: np.ndarray, stylized_rgb: np.ndarray, alpha: np.ndarray | None = None
) -> np.ndarray:
    """The output I420 frame for `mode` (see the module docstring); `frame` is not modified."""
    h, w = yuv.frame_size(frame)
    return blend(mode, frame, layer(mode, stylized_rgb, h, w), alpha)
