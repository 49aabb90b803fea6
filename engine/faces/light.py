"""Light: a face evenly exposed and lit, the background a little dimmer, an optional vignette; and
low light (a gain that keeps skin tones, and a denoise).

Everything the face light changes is one gain map, made at 1/8 of the frame's size (light varies
slowly) and applied in one pass to the luma and one to the chroma planes' distance from grey:
the map multiplies each pixel's RGB, as more light would, so skin keeps its hue and its
saturation (a luma-only gain paled a lit face to grey). White balance is a shift of the chroma
planes. The background's dim is not in the map: the effect stage turns the room's luma down as
it composites (see stages.composite_light).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

from ..effects import gain as gains
from ..media import yuv
from .regions import extent, face_box

GAIN_SHRINK = 8
FACE_TARGET_LUMA = 150.0  # where the face's mean luma is brought to (studio and key)
EXPOSURE_RANGE = (0.85, 1.6)
BACKGROUND_DIM = 0.18  # Studio Light's background, when a mask says where it is (dimmed as it is composited)
KEY_GAIN = 0.28  # the key light's peak, on the face's lit side
FILL_LOSS = 0.08  # and the shadow side's loss
WHITE_BALANCE = 0.5  # how far the picture's mean chroma is pulled to grey
MAX_WB_SHIFT = 12
WB_SAMPLE_ROWS = 4
VIGNETTE_DEPTH = 0.45  # the corners' loss at vignette 1


def _face_frame(points: np.ndarray):
    """(centre, width, height, roll) of the face from its landmarks."""
    x0, y0, x1, y1, mx, my = extent(points)
    eye_r, eye_l = points[33], points[263]
    roll = math.atan2(float(eye_l[1] - eye_r[1]), float(eye_l[0] - eye_r[0]))
    return (mx, my), x1 - x0, y1 - y0, roll


@functools.lru_cache(maxsize=4)
def _grid(gh: int, gw: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells' centres over a (gh, gw) grid: (x, y), each (1, gw) and (gh, 1), read-only."""
    xx = np.arange(gw, dtype=np.float32)[None] + np.float32(0.5)
    yy = np.arange(gh, dtype=np.float32)[:, None] + np.float32(0.5)
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def _blob(gh: int, gw: int, centre, sx: float, sy: float, roll: float) -> np.ndarray:
    """A rotated Gaussian over the (gh, gw) grid, peak 1; centre and sigmas in grid cells."""
    xx, yy = _grid(gh, gw)
    dx, dy = xx - np.float32(centre[0]), yy - np.float32(centre[1])
    c, s = np.float32(math.cos(roll)), np.float32(math.sin(roll))
    u, v = (c * dx + s * dy) * np.float32(1 / sx), (c * dy - s * dx) * np.float32(1 / sy)
    return cv2.exp(np.float32(-0.5) * (u * u + v * v))


def face_exposure(frame: yuv.Frame, points: np.ndarray) -> float:
    """The gain that brings the face's mean luma (its box's inner half) to FACE_TARGET_LUMA."""
    h, w = yuv.frame_size(frame)
    box = face_box(points, h, w, margin=-0.25)
    if box is None:
        return 1.0
    x0, y0, x1, y1 = box
    mean = float(cv2.mean(yuv.planes(frame)[0][y0:y1, x0:x1])[0])
    low, high = EXPOSURE_RANGE
    return min(max(FACE_TARGET_LUMA / max(mean, 1.0), low), high)  # (np.clip of a scalar costs 10 µs)


def face_frame(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """What the light map needs of the landmarks: (centre x, centre y, width, height, roll)."""
    (cx, cy), fw, fh, roll = _face_frame(points)
    return cx, cy, fw, fh, roll


def light_map(height: int, width: int, face: tuple | None, mode: str, exposure: float,
              vignette: float) -> np.ndarray:
    """The luma gain of the face's light and the vignette at 1/GAIN_SHRINK of the frame, float32
    (1 = unchanged); `face`: `face_frame` of the landmarks, or None."""
    gh, gw = max(2, height // GAIN_SHRINK), max(2, width // GAIN_SHRINK)
    gain = np.ones((gh, gw), np.float32)
    if face is not None and mode != "off":
        light, key = _face_light(gh, gw, face, mode)
        gain += (_lift(mode, exposure) - 1.0) * light
        if key is not None:
            gain *= key
    if vignette > 0:
        gain *= _vignette(gh, gw, vignette)
    return gain


def _lift(mode: str, exposure: float) -> float:
    return exposure * (1.1 if mode == "studio" else 1.0)


def _face_light(gh: int, gw: int, face: tuple, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The face's light over a (gh, gw) grid, peak 1 (the gain is 1 + (lift - 1) x it), and for
    `key` the key and fill sides' factor; neither depends on the exposure."""
    cx, cy, fw, fh, roll = face
    centre, fw, fh = np.float32([cx, cy]) / GAIN_SHRINK, fw / GAIN_SHRINK, fh / GAIN_SHRINK
    light = _blob(gh, gw, centre, fw * 1.0, fh * 1.1, roll)  # a broad, soft light: not a spot
    if mode != "key":
        return light, None
    # The key comes from the face's own right, a little above; the fill side drops a touch.
    c, s = math.cos(roll), math.sin(roll)
    side, up = -0.35 * fw, -0.2 * fh
    key_at = centre + np.float32([c * side - s * up, s * side + c * up])
    fill_at = centre + np.float32([-c * side - s * up, -s * side + c * up])
    key = 1 + KEY_GAIN * _blob(gh, gw, key_at, fw * 0.45, fh * 0.55, roll)
    key *= 1 - FILL_LOSS * _blob(gh, gw, fill_at, fw * 0.4, fh * 0.55, roll)
    return light, key


class GainMap(NamedTuple):
    """A gain map for a picture: `gain` (float32 cells, 1 = unchanged) spans `size` (height,
    width) pixels, and the picture lies on it from `offset` (y, x) on: the picture's own map
    (its size, offset 0), or a moving face's light, made once, bigger than the picture and
    placed under it (see LightMaps)."""

    gain: np.ndarray
    size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)


class LightMaps:
    """`light_map` for one stream, made cheaply frame after frame while the face moves.

    The face's light is made on a grid twice the map's size around a face at its centre (times
    the exposure's lift: made again when that changes); it is made again only when the face's
    size or roll leave SIZE_SLACK / ROLL_SLACK of those it was made for, or the mode changes.
    A face anywhere gets that same big map, placed under the picture to the pixel (so the gain
    pass's plan, made for the map, is kept while the face moves). With a vignette (which stays
    with the picture, not the face) the map is the picture's: a slice of the face's light placed
    to a whole cell (GAIN_SHRINK px) times the vignette, kept per setting. The light is so broad
    that either placement moves the 8-bit gain `apply_gain` applies by a step (1/64) or two at
    most, on a few percent of the map."""

    SIZE_SLACK = 0.03  # of the face's width and height
    ROLL_SLACK = 0.03  # rad

    def __init__(self) -> None:
        self._face: tuple | None = None  # (grid, mode, fw, fh, roll, light, key), big
        self._made = 0  # how many times it was made
        self._lit: tuple[tuple, np.ndarray] | None = None  # the big light times the exposure's lift
        self._vignette: tuple[tuple, np.ndarray] | None = None
        self._last: tuple[tuple, GainMap] | None = None

    def get(self, height: int, width: int, face: tuple | None, mode: str, exposure: float,
            vignette: float) -> GainMap:
        """The map (read-only; the same array while nothing it depends on changed)."""
        gh, gw = max(2, height // GAIN_SHRINK), max(2, width // GAIN_SHRINK)
        lit = face is not None and mode != "off"
        col = row = 0
        if lit:
            cx, cy, fw, fh, roll = face
            col, row = round(cx / GAIN_SHRINK), round(cy / GAIN_SHRINK)
            if not (0 <= col <= gw and 0 <= row <= gh):  # the face's centre off the picture: made whole
                return GainMap(light_map(height, width, face, mode, exposure, vignette), (height, width))
            self._make_face(gh, gw, fw, fh, roll, mode)
            if vignette <= 0:
                return self._placed(height, width, gh, gw, cx, cy, mode, exposure)
        key = (gh, gw, lit, mode, col, row, exposure, vignette, self._made)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        gain = None
        if lit:
            cut = (slice(gh - row, 2 * gh - row), slice(gw - col, 2 * gw - col))
            light, sides = self._face[5], self._face[6]
            gain = light[cut] * np.float32(_lift(mode, exposure) - 1.0) + np.float32(1)
            if sides is not None:
                gain *= sides[cut]
        if vignette > 0:
            if self._vignette is None or self._vignette[0] != (gh, gw, vignette):
                self._vignette = ((gh, gw, vignette), _vignette(gh, gw, vignette))
            gain = self._vignette[1] if gain is None else gain * self._vignette[1]
        elif gain is None:
            gain = np.ones((gh, gw), np.float32)
        self._last = (key, GainMap(gain, (height, width)))
        return self._last[1]

    def _placed(self, height: int, width: int, gh: int, gw: int, cx: float, cy: float, mode: str,
                exposure: float) -> GainMap:
        """The big light (its cell (gw, gh) under the face's centre) placed under the picture."""
        key = (self._made, exposure)
        if self._lit is None or self._lit[0] != key:
            light, sides = self._face[5], self._face[6]
            gain = light * np.float32(_lift(mode, exposure) - 1.0) + np.float32(1)
            if sides is not None:
                gain *= sides
            self._lit = (key, gain)
        sy, sx = height / gh, width / gw  # the picture's pixels per cell
        offset = (min(max(0, round(sy * (gh - cy / GAIN_SHRINK))), height),
                  min(max(0, round(sx * (gw - cx / GAIN_SHRINK))), width))
        return GainMap(self._lit[1], (2 * height, 2 * width), offset)

    def _make_face(self, gh: int, gw: int, fw: float, fh: float, roll: float, mode: str) -> None:
        made = self._face
        if (made is not None and made[:2] == ((gh, gw), mode) and abs(math.log(max(fw, 1.0) / made[2])) <= self.SIZE_SLACK
                and abs(math.log(max(fh, 1.0) / made[3])) <= self.SIZE_SLACK and abs(roll - made[4]) <= self.ROLL_SLACK):
            return
        fw, fh = max(fw, 1.0), max(fh, 1.0)
        centred = (gw * GAIN_SHRINK, gh * GAIN_SHRINK, fw, fh, roll)  # cell (gw, gh) of the big grid
        light, sides = _face_light(2 * gh, 2 * gw, centred, mode)
        self._face = ((gh, gw), mode, fw, fh, roll, light, sides)
        self._made += 1


def _vignette(gh: int, gw: int, amount: float) -> np.ndarray:
    xx, yy = _grid(gh, gw)
    r2 = (xx / gw * 2 - 1) ** 2 + (yy / gh * 2 - 1) ** 2
    return (1 - VIGNETTE_DEPTH * amount * (r2 / 2) ** 1.5).astype(np.float32)


def apply_gain(frame: np.ndarray, gain: np.ndarray) -> None:
    """Luma and the chroma's distance from grey *= gain (scaled up bilinearly), in place, as 8-bit
    fixed point (gain * 64, up to 4x), one pass each (see effects.gain) over the part of the
    planes where the gain is not 1 (the face's light alone touches only the face's
    neighbourhood)."""
    GainPass()(frame, GainMap(gain, yuv.frame_size(frame)))


class GainPass:
    """`apply_gain` of a `GainMap` for one stream: what it works out from the map (where the
    gain is not 1, the map stretched over its pixels) is kept while the map is the same array (a
    still face's light, a moving face's big one, a vignette); each frame takes the part under
    the picture."""

    def __init__(self) -> None:
        self._gain: np.ndarray | None = None
        self._plan: tuple | None = None

    def __call__(self, frame: np.ndarray, placed: GainMap) -> None:
        if placed.gain is not self._gain or self._plan is None or self._plan[0] != placed.size:
            self._gain, self._plan = placed.gain, (placed.size, _plan(placed.gain, *placed.size))
        plans = self._plan[1]
        if plans is None:
            return
        y, u, v = yuv.planes(frame)
        (oy, ox), (h, w) = placed.offset, y.shape
        for (region, (stretched, rows, weights)), scale in zip(plans, (1, 2)):
            y0, y1, x0, x1 = region
            oy_, ox_, h_, w_ = oy // scale, ox // scale, h // scale, w // scale
            y0, y1, x0, x1 = max(y0, oy_), min(y1, oy_ + h_), max(x0, ox_), min(x1, ox_ + w_)
            if y0 >= y1 or x0 >= x1:
                continue
            part = (stretched[:, x0:x1], rows[y0:y1], weights[y0:y1])
            inside = (slice(y0 - oy_, y1 - oy_), slice(x0 - ox_, x1 - ox_))
            if scale == 1:
                gains.apply(y[inside], part)
            else:
                gains.apply_chroma(u[inside], v[inside], part)


def _plan(gain: np.ndarray, height: int, width: int):
    """For the luma, then the chroma planes, of a map spanning (height, width) pixels: the
    region (y0, y1, x0, x1) where the 8-bit gain is not 1 and `gains.stretch` of the map over the
    plane; None where it is 1 everywhere."""
    fixed = cv2.convertScaleAbs(gain, alpha=float(gains.ONE))
    c0, r0, cols, rows = cv2.boundingRect(cv2.compare(fixed, gains.ONE, cv2.CMP_NE))
    if rows == 0:
        return None
    gh, gw = fixed.shape
    r0, r1 = max(0, r0 - 1), min(gh, r0 + rows + 1)
    c0, c1 = max(0, c0 - 1), min(gw, c0 + cols + 1)
    plans = []
    for h, w in ((height, width), (height // 2, width // 2)):
        sy, sx = h / gh, w / gw
        y0, y1 = round(r0 * sy), h if r1 == gh else round(r1 * sy)
        x0, x1 = round(c0 * sx), w if c1 == gw else round(c1 * sx)
        plans.append(((y0, y1, x0, x1), gains.stretch(fixed, h, w)))
    return plans


def white_balance_shift(frame: yuv.Frame) -> tuple[int, int]:
    """The shifts of U and V, whole levels, that pull the picture's mean chroma part way to grey
    (grey world). The mean is taken over every WB_SAMPLE_ROWS-th row (a quarter of the reading;
    the same mean to a fraction of a level). Whole levels: OpenCV adds a fractional scalar to
    8-bit planes ten times slower, and each pixel's result is rounded to a whole level anyway."""
    shifts = []
    for plane in yuv.planes(frame)[1:]:
        mean = cv2.mean(plane[::WB_SAMPLE_ROWS])[0]
        shift = min(max(WHITE_BALANCE * (128.0 - mean), -MAX_WB_SHIFT), MAX_WB_SHIFT)
        shifts.append(round(shift) if abs(shift) >= 1 else 0)
    return shifts[0], shifts[1]


def white_balance(frame: np.ndarray) -> None:
    """The chroma shifted by the frame's own `white_balance_shift`, in place."""
    for plane, shift in zip(yuv.planes(frame)[1:], white_balance_shift(frame)):
        if shift > 0:
            cv2.add(plane, shift, dst=plane)
        elif shift < 0:
            cv2.subtract(plane, -shift, dst=plane)


class LowLight:
    """Gain and denoise for a dark room, per stream: a gamma lift of the luma, the chroma scaled
    by the same gain around grey (hues untouched, so skin keeps its tone), chroma noise smoothed (a small blur of the half-size chroma planes),
    and luma noise averaged over time where the picture is still (a recursive filter that lets
    anything that moves through at once)."""

    MOTION = 12  # luma steps beyond this are motion, not noise

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._lut: tuple[float, np.ndarray] | None = None

    def __call__(self, frame: yuv.Frame, amount: float) -> np.ndarray:
        out = yuv.contiguous(frame).copy() if not isinstance(frame, tuple) else yuv.contiguous(frame)
        luma, u, v = yuv.planes(out)
        if self._lut is None or self._lut[0] != amount:
            levels = np.arange(256, dtype=np.float32) / 255
            self._lut = (amount, np.clip(255 * levels ** (1 / (1 + 1.2 * amount)) + 0.5, 0, 255).astype(np.uint8))
        before = cv2.mean(luma)[0]
        cv2.LUT(luma, self._lut[1], dst=luma)
        # Chroma scaled as the luma was: the same hue at the same saturation, not a washed-out lift.
        gain = min(max(cv2.mean(luma)[0] / max(before, 1.0), 1.0), 2.0)
        if self._previous is not None and self._previous.shape == luma.shape:
            still = cv2.absdiff(luma, self._previous) < self.MOTION
            averaged = cv2.addWeighted(luma, 0.5, self._previous, 0.5, 0)
            np.copyto(luma, averaged, where=still)
        self._previous = luma.copy()
        for plane in (u, v):
            cv2.addWeighted(plane, gain, plane, 0.0, 128.0 * (1.0 - gain), dst=plane)
            cv2.stackBlur(plane, (3, 3), dst=plane)
        return out
