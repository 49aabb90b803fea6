"""Clips with exact ground truth for `camfx bench quality`.

A person with a frozen alpha matte (bench/groundtruth/person.png) is composited exactly over a
real background, I_t = A_t * P_t + (1 - A_t) * B, moved by one scripted motion (still, a slow
pan, a fast move with a zoom, then out of the frame and back), with seeded sensor noise and an
I420 round trip, as a camera's frames reach the engine. Every frame keeps what made it: the true
alpha, the person layer and the background, so a metric can build any ideal output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from camfx.engine import yuv

GROUNDTRUTH = Path(__file__).parent / "groundtruth"
# name -> (file, fit): "cover" scales the picture to fill the frame; "tile" repeats it at its own
# scale, so the texture keeps its fine grain at any frame size.
BACKGROUNDS = {
    "busy": ("busy.jpg", "cover"),  # a night launch pad: towers, lights, clouds
    "dark": ("dark.jpg", "cover"),  # a star field, near her black collar and turtleneck
    "gravel": ("gravel.jpg", "tile"),  # high-frequency texture
    "table": ("table.jpg", "cover"),  # warm wood, a cup's white rim beside the head
}
CLIPS = tuple(BACKGROUNDS)
PERSON_HEIGHT = 0.72  # of the frame height, at zoom 1
NOISE_SIGMA = 2.5  # sensor noise, 8-bit levels, per pixel and channel
SEED = 24


@dataclass
class Frame:
    """One frame of a clip and its truth (RGB arrays are float32, 0-255)."""

    image: np.ndarray  # the I420 frame a system gets
    alpha: np.ndarray  # the true alpha A_t, float32 HxW in [0, 1]
    person: np.ndarray  # the person layer P_t, RGB (meaningful where alpha > 0)
    background: np.ndarray  # the background B behind the person, RGB (no noise)
    noise: np.ndarray  # the sensor noise added to this frame, RGB
    moving: bool  # the truth differs from the previous frame's


@lru_cache(maxsize=1)
def person_rgba() -> np.ndarray:
    """The frozen person: float32 RGBA, colour 0-255, alpha 0-1."""
    bgra = cv2.imread(str(GROUNDTRUTH / "person.png"), cv2.IMREAD_UNCHANGED)
    rgba = cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA).astype(np.float32)
    rgba[..., 3] /= 255.0
    return rgba


def background(name: str, height: int, width: int) -> np.ndarray:
    """The background `name` at (height, width), RGB float32."""
    file, fit = BACKGROUNDS[name]
    bgr = cv2.imread(str(GROUNDTRUTH / file), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ih, iw = rgb.shape[:2]
    if fit == "tile":
        reps = (math.ceil(height / ih), math.ceil(width / iw), 1)
        return np.tile(rgb, reps)[:height, :width].astype(np.float32)
    scale = max(height / ih, width / iw)
    rh, rw = max(height, round(ih * scale)), max(width, round(iw * scale))
    resized = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (rh - height) // 2, (rw - width) // 2
    return resized[top : top + height, left : left + width].astype(np.float32)


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return (1.0 - math.cos(math.pi * x)) / 2.0


def pose(u: float, width: int, person_width: float) -> tuple[float, float]:
    """(centre x in pixels, zoom) of the person at clip time `u` in [0, 1).

    0-.25 still in the middle; .25-.5 a slow pan right (.12 W); .5-.7 a fast move left (.27 W)
    while zooming in to 1.3x; .7-.82 out of the frame to the right; .82-.88 gone; .88-1 back to
    the middle at 1x (the clip loops).
    """
    mid, right, left = width / 2, width * 0.62, width * 0.35
    gone = width + person_width * 1.3 / 2 + 8
    if u < 0.25:
        return mid, 1.0
    if u < 0.5:
        return mid + (right - mid) * _ease((u - 0.25) / 0.25), 1.0
    if u < 0.7:
        k = _ease((u - 0.5) / 0.2)
        return right + (left - right) * k, 1.0 + 0.3 * k
    if u < 0.82:
        return left + (gone - left) * _ease((u - 0.7) / 0.12), 1.3
    if u < 0.88:
        return gone, 1.3
    k = _ease((u - 0.88) / 0.12)
    return gone + (mid - gone) * k, 1.3 - 0.3 * k


def phase(u: float) -> str:
    """The name of the motion at clip time `u` (see `pose`)."""
    for end, name in ((0.25, "still"), (0.5, "slow pan"), (0.7, "fast move + zoom"), (1.0, "leave and enter")):
        if u < end:
            return name
    return "leave and enter"


def still_frame(frames: int) -> int:
    """The index of the last frame of the still part: the one the contact sheet shows."""
    return max(0, math.ceil(0.25 * frames) - 1)


def _place(rgba: np.ndarray, height: int, width: int, cx: float, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """The person warped into the frame: (premultiplied colour, alpha), bilinear, fractional
    position. The layer's bottom edge (the photo's crop) stays below the frame."""
    ph, pw = rgba.shape[:2]
    scale = PERSON_HEIGHT * height / ph * zoom
    bottom = height + 4 * zoom  # the crop line, just out of sight
    m = np.float32([[scale, 0, cx - scale * pw / 2], [0, scale, bottom - scale * ph]])
    premultiplied = np.dstack([rgba[..., :3] * rgba[..., 3:], rgba[..., 3]])
    warped = cv2.warpAffine(premultiplied, m, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped[..., :3], np.clip(warped[..., 3], 0.0, 1.0)


def make_clip(name: str, width: int, height: int, frames: int, seed: int = SEED) -> list[Frame]:
    """`frames` frames of clip `name` (a background of BACKGROUNDS) at width x height, as a list
    (a frame at 720p holds about 30 MB of truth: `clip_frames` makes them one at a time)."""
    return list(clip_frames(name, width, height, frames, seed))


def clip_frames(name: str, width: int, height: int, frames: int, seed: int = SEED) -> Iterator[Frame]:
    """The frames of clip `name` (a background of BACKGROUNDS) at width x height, made one by one."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown clip {name!r}; clips: {', '.join(CLIPS)}")
    rgba = person_rgba()
    back = background(name, height, width)
    person_width = PERSON_HEIGHT * height / rgba.shape[0] * rgba.shape[1]
    rng = np.random.default_rng([seed, width, height, CLIPS.index(name)])
    previous = None
    for i in range(frames):
        cx, zoom = pose(i / frames, width, person_width)
        premultiplied, alpha = _place(rgba, height, width, cx, zoom)
        noise = rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(NOISE_SIGMA)
        rgb = premultiplied + (1.0 - alpha[..., None]) * back + noise
        image = yuv.from_rgb(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
        with np.errstate(invalid="ignore", divide="ignore"):
            person = np.where(alpha[..., None] > 0, premultiplied / alpha[..., None], 0.0).astype(np.float32)
        moving = previous is not None and not np.array_equal(previous, alpha)
        yield Frame(image, alpha, person, back, noise, moving)
        previous = alpha
