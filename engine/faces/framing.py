"""Auto frame: a virtual camera crop that follows the face (or the group of faces).

The crop keeps the frame's aspect ratio. Its goal is set from the faces' union box: `follow`
frames head and shoulders, `tight` the face; the goal moves only when the faces leave a dead
zone around it (so a still face never makes the crop twitch), and the crop eases toward the goal
as a critically damped spring (no jump when a move starts or ends, settled within about a
second). The zoom never goes past MAX_ZOOM (beyond it the picture is visibly soft); with nobody
in the picture for NOBODY_FRAMES the goal is the full frame again.

The crop is worked on at its own resolution: every stage after framing (mask, effect, touch-up,
light) pays for the crop's pixels, not for the frame's, and the output is brought to the camera's
size at the end. Scaling the crop up first would only make them pay for pixels that hold nothing
new. Mostly that picture is a `window` of the camera's own pixels around the crop (no resampling
at all: the one resampling is the output's, `apply_crop` of the crop's place in the window); a
new background picture (replace) must not zoom with the crop, so there the crop is resampled to
`working_size` and the background made at that size, and `scale_back` brings the output back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..media import yuv
from ..media.scale import resize_linear

MAX_ZOOM = 2.5
FACE_HEIGHTS = {"follow": 4.5, "tight": 2.4}  # crop height in face heights
EYE_LINE = 0.4  # where the face's centre sits, from the crop's top, as a fraction of its height
DEAD_ZONE = 0.08  # of the crop's size: face moves smaller than this leave the goal alone
ZOOM_DEAD_ZONE = 0.15  # relative change of the wanted crop size that moves the goal
OMEGA = 6.0  # spring's natural frequency, 1/s: settled to ~2 % one second after a move
FPS = 30.0  # the spring steps one frame at this rate
NOBODY_FRAMES = 45  # 1.5 s without a face: back to the full frame
WINDOW_SPARE = 8  # px: a window is at least this much wider than its crop
WORK_STEP = 64  # px: the working width is the crop's rounded up to this, so a zoom passes through
                # a few sizes, and what a stage keeps per size (masks, maps) is kept in between


@dataclass
class Crop:
    """A crop of the frame: centre and width in frame pixels (height follows the aspect)."""

    cx: float
    cy: float
    width: float


class AutoFramer:
    """One stream's crop; `update(boxes, height, width, mode)` once per frame -> the crop."""

    def __init__(self) -> None:
        self._crop: Crop | None = None
        self._velocity = [0.0, 0.0, 0.0]
        self._goal: Crop | None = None
        self._nobody = 0
        self._size: tuple[int, int] | None = None

    def update(self, boxes, height: int, width: int, mode: str) -> Crop:
        full = Crop(width / 2, height / 2, float(width))
        if self._size != (height, width):  # first frame, or the camera changed size
            self._crop, self._goal, self._velocity, self._size = full, full, [0.0, 0.0, 0.0], (height, width)
        if boxes:
            self._nobody = 0
            wanted = self._wanted(boxes, height, width, mode)
            if self._moved(wanted, height, width):
                self._goal = wanted
        else:
            self._nobody += 1
            if self._nobody >= NOBODY_FRAMES:
                self._goal = full
        self._ease(self._goal)
        self._crop = _clamped(self._crop, height, width)
        return self._crop

    def _wanted(self, boxes, height: int, width: int, mode: str) -> Crop:
        corners = [b.tolist() for b in boxes]  # Python floats: numpy's per-element cost is most of the work here
        x0, y0, x1, y1 = corners[0]
        for bx0, by0, bx1, by1 in corners[1:]:
            x0, y0, x1, y1 = min(x0, bx0), min(y0, by0), max(x1, bx1), max(y1, by1)
        aspect = width / height
        crop_h = max((y1 - y0) * FACE_HEIGHTS[mode], (x1 - x0) * 1.6 / aspect)  # the group fits across
        crop_w = min(float(width), max(width / MAX_ZOOM, crop_h * aspect))
        crop_h = crop_w / aspect
        cy = (y0 + y1) / 2 + crop_h * (0.5 - EYE_LINE)
        return _clamped(Crop((x0 + x1) / 2, cy, crop_w), height, width)

    def _moved(self, wanted: Crop, height: int, width: int) -> bool:
        goal = self._goal
        if abs(wanted.width - goal.width) > ZOOM_DEAD_ZONE * goal.width:
            return True
        goal_h = goal.width * height / width
        return abs(wanted.cx - goal.cx) > DEAD_ZONE * goal.width or abs(wanted.cy - goal.cy) > DEAD_ZONE * goal_h

    def _ease(self, goal: Crop) -> None:
        """One frame of a critically damped spring toward `goal` (exact step of its solution)."""
        dt = 1.0 / FPS
        decay = math.exp(-OMEGA * dt)
        pos, velocity = [], []
        # Per axis in Python floats (three numbers: numpy's per-call cost is most of the work).
        for now, target, speed in zip((self._crop.cx, self._crop.cy, self._crop.width),
                                      (goal.cx, goal.cy, goal.width), self._velocity):
            offset = now - target
            slope = speed + OMEGA * offset
            pos.append(target + (offset + slope * dt) * decay)
            velocity.append((speed - OMEGA * slope * dt) * decay)
        self._velocity = velocity
        self._crop = Crop(*pos)


def _clamped(crop: Crop, height: int, width: int) -> Crop:
    w = min(max(crop.width, width / MAX_ZOOM), float(width))
    h = w * height / width
    return Crop(min(max(crop.cx, w / 2), width - w / 2), min(max(crop.cy, h / 2), height - h / 2), w)


def is_full(crop: Crop, height: int, width: int) -> bool:
    """Close enough to the whole frame (within half a pixel) to skip resampling."""
    return width - crop.width < 0.5 and abs(crop.cx - width / 2) < 0.5 and abs(crop.cy - height / 2) < 0.5


def working_size(crop: Crop, height: int, width: int) -> tuple[int, int]:
    """(height, width) to work on `crop` at: the crop's own width rounded up to WORK_STEP (at
    most the frame's), at the frame's aspect, even."""
    ww = min(width, -(-math.ceil(crop.width - 0.5) // WORK_STEP) * WORK_STEP)
    wh = min(height, max(2, round(ww * height / width / 2) * 2))
    return wh, ww


def window(crop: Crop, height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """(y0, x0): where a window of `size` (height, width; as big as the crop or bigger) that holds
    the crop lies in the frame: centred on it, inside the frame, on even pixels (so it maps onto
    the chroma planes)."""
    wh, ww = size
    x0 = min(max(0, round((crop.cx - ww / 2) / 2) * 2), width - ww)
    y0 = min(max(0, round((crop.cy - wh / 2) / 2) * 2), height - wh)
    return y0, x0


def window_size(crop: Crop, height: int, width: int) -> tuple[int, int]:
    """`working_size` for a window that holds the crop with a few pixels to spare on every side
    (the window's corner is rounded to even pixels)."""
    return working_size(Crop(crop.cx, crop.cy, crop.width + WINDOW_SPARE), height, width)


def cut_window(frame: yuv.Frame, corner: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The window's planes: views of the frame's, nothing copied."""
    (y0, x0), (wh, ww) = corner, size
    return tuple(plane[y0 // f : (y0 + wh) // f, x0 // f : (x0 + ww) // f]
                 for plane, f in zip(yuv.planes(frame), (1, 2, 2)))


def apply_crop(frame: yuv.Frame, crop: Crop, size: tuple[int, int] | None = None,
               aspect: float | None = None) -> np.ndarray:
    """The crop scaled to `size` (height, width; the frame's size by default): bilinear,
    sub-pixel placed, so a slow pan glides rather than stepping a pixel at a time. `aspect`: the
    crop's height over its width (the frame's by default)."""
    h, w = yuv.frame_size(frame)
    oh, ow = size or (h, w)
    out = yuv.empty(oh, ow)
    crop_h = crop.width * (h / w if aspect is None else aspect)
    sx, sy = ow / crop.width, oh / crop_h
    x0, y0 = crop.cx - crop.width / 2, crop.cy - crop_h / 2
    for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
        f = 1.0 if i == 0 else 0.5  # chroma planes are half size
        # dst pixel centre (u + 0.5) maps to src (x0 + (u + 0.5) / scale) in luma pixels.
        m = np.float32([[1 / sx, 0, (x0 * f) + 0.5 / sx - 0.5], [0, 1 / sy, (y0 * f) + 0.5 / sy - 0.5]])
        _warp(src, m, dst)
    return out


def scale_back(frame: yuv.Frame, height: int, width: int) -> np.ndarray:
    """A picture worked on at `working_size` brought to the camera's (height, width), pixel
    centres aligned (see media.scale)."""
    out = yuv.empty(height, width)
    for src, dst in zip(yuv.planes(frame), yuv.planes(out)):
        resize_linear(src, dst.shape[1], dst.shape[0], dst=dst)
    return out


def _warp(src: np.ndarray, inverse: np.ndarray, dst: np.ndarray) -> None:
    cv2.warpAffine(src, inverse, (dst.shape[1], dst.shape[0]), dst=dst,
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
