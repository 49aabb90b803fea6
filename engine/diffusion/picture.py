"""What a stream's diffusion work is made of: the picture size the model works at, the
published picture, the room with the person painted out (for room backdrops), and the parameter
an error is about. The work itself runs on the device's scheduler (camfx.engine.diffusion.service).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def diffusion_size(frame_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) the model works at: `long_side` on the frame's long side, the other side
    following the frame's shape, both multiples of 8 (TAESD's factor)."""
    h, w = frame_hw
    scale = long_side / max(h, w)
    return max(64, round(h * scale / 8) * 8), max(64, round(w * scale / 8) * 8)


@dataclass
class StylizedPicture:
    """One generated picture and what it was made from."""

    rgb: np.ndarray
    mode: str
    serial: int  # increases with every new picture


def room_without_person(rgb: np.ndarray, alpha: np.ndarray | None, last: StylizedPicture | None) -> np.ndarray:
    """The camera picture with the person painted over by the `last` backdrop (or, before there
    is one, by a heavy blur of the room), so the backdrop shows the room, not a ghost."""
    if alpha is None:
        return rgb
    h, w = rgb.shape[:2]
    a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    a = np.clip(a * 1.5, 0.0, 1.0)  # reach past the soft edge, where hair still shows
    if last is not None and last.mode == "backdrop" and last.rgb.shape == rgb.shape:
        fill = last.rgb
    else:
        fill = cv2.blur(rgb, (max(3, w // 8) | 1, max(3, h // 8) | 1))
    return (rgb * (1.0 - a) + fill * a).astype(np.uint8)


def field_of(exc: Exception) -> str:
    """The parameter an error from the worker is about, for the page to show it there."""
    from camfx.models.diffusion import ModelNotFoundError

    from .stylizer import PromptTooLongError

    if isinstance(exc, PromptTooLongError):
        return "prompt"
    if isinstance(exc, ModelNotFoundError):
        return "diffusion_model"
    return "effect"
