"""Where the segmentation model looks: a region around the person, not the whole frame.

The bundled models see 256x256 (general) or 144x256 (landscape) pixels. A 16:9 frame squashed
into the general model's square loses 44 % of the person's width, and a person who fills a third
of the frame gets a third of the model's pixels. Cut to a region of the model's own shape around
the person (the last mask's box with a margin), the model sees her undistorted and larger, and
its edge follows her hair and shoulders far more closely (the figures are in docs/effects.md).

The whole frame is looked at when there is no region yet, when the last mask found (next to)
nobody, and when the picture changed outside the region (someone coming in, a move the margin
did not hold). A mask that reaches the region's side where the frame goes on widens the next
region there. And every CHECK_EVERY model calls the model also sees the whole frame, for the
region alone: someone who came in with little contrast to the room, or a region left on an
empty room (zoomed in on, the model can take texture for a person), is found within a second.
A region the mask does not fill is not made again for half a second: an empty room's texture,
looked at in turn whole and zoomed in on, would make the mask jump from frame to frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..media import yuv

MARGIN = 0.15  # of the person's box's larger side, added on every side
MIN_HEIGHT = 0.4  # of the frame's height: a far-away person is not zoomed in on beyond this
ALIGN = 16  # px: region corners on this grid, so halved planes cut it exactly (see yuv.Halvings)
WHOLE = 0.9  # a region this close to the frame's size in both directions: the whole frame
THUMB_ROWS = 36  # the luma thumbnail that watches for change outside the region
OUTSIDE_LEVELS = 16  # a thumbnail pixel that changed this much (8-bit) outside the region is motion
PERSON = 0.5  # probability that counts as the person, for the box
MIN_RUN = 0.02  # of the map's height (width): a column (row) with less mask is left out of the box
MIN_PERSON = 0.03  # of the frame: less mask than this on the whole frame gets no region
MIN_FILL = 0.08  # of the region: less mask than this in it, and the whole frame is looked at again
QUIET_CALLS = 15  # after a region the mask did not fill, whole-frame calls that make none (0.5 s)
CHECK_EVERY = 30  # model calls on a region between two looks at the whole frame (1 s at 30 fps)


Region = tuple[int, int, int, int]  # (x0, y0, x1, y1) in the frame's pixels, multiples of ALIGN


class PersonRegion:
    """One stream's region: `region(...)` before the model looks (None: the whole frame), and
    `update(...)` with each new mask."""

    def __init__(self) -> None:
        self._region: Region | None = None
        self._thumb: np.ndarray | None = None
        self._frame_hw = (0, 0)  # the frame's size at the last update
        self._calls = 0  # model calls on a region
        self._quiet = 0  # whole-frame calls left that make no region (after one the mask did not fill)

    def reset(self) -> None:
        self._region = self._thumb = None
        self._quiet = 0

    @property
    def current(self) -> Region | None:
        return self._region

    def region(self, thumb: np.ndarray, skip_rows: int = 0) -> Region | None:
        """The region for this frame, given its luma thumbnail (`thumbnail`): the whole frame
        (None) when the thumbnail changed outside the region since the last frame. `skip_rows`:
        thumbnail rows not to watch (a latency probe's stamped rows)."""
        previous, self._thumb = self._thumb, thumb
        region = self._region
        if region is None:
            return None
        if previous is None or previous.shape != thumb.shape:  # a new frame size (the auto-frame window)
            self._region = None
            return None
        changed = cv2.compare(cv2.absdiff(thumb, previous), OUTSIDE_LEVELS, cv2.CMP_GT)
        changed[:skip_rows] = 0
        th, tw = thumb.shape
        h, w = self._frame_hw
        x0, y0, x1, y1 = region
        # The region on the thumbnail, grown by a pixel (a thumbnail pixel straddling its side
        # mixes inside and out).
        changed[max(0, y0 * th // h - 1): -(-y1 * th // h) + 1, max(0, x0 * tw // w - 1): -(-x1 * tw // w) + 1] = 0
        if cv2.countNonZero(changed):
            self._region = None
        return self._region

    def wants_check(self) -> bool:
        """After a model call on the region: whether the model should also see the whole frame
        now (every CHECK_EVERY calls), for `check`."""
        self._calls += 1
        return self._calls % CHECK_EVERY == 0

    def check(self, probability: np.ndarray, frame_hw: tuple[int, int]) -> None:
        """The model's mask of the whole frame: the next frame looks at the whole frame when it
        finds nobody, or someone beyond the region."""
        region = self._region
        if region is None:
            return
        box = person_box(probability, (0, 0, frame_hw[1], frame_hw[0]))
        slack = frame_hw[1] / probability.shape[1], frame_hw[0] / probability.shape[0]
        if box is None or any(box[i] < region[i] - slack[i % 2] for i in (0, 1)) or any(
                box[i] > region[i] + slack[i % 2] for i in (2, 3)):
            self._region = None

    def update(self, probability: np.ndarray, frame_hw: tuple[int, int], looked_at: Region | None) -> None:
        """After the model ran on `looked_at` (None: the whole frame): the next region from its
        output, `probability` over what it looked at."""
        self._frame_hw = frame_hw
        h, w = frame_hw
        # Too little person for a region: on the whole frame, less than MIN_PERSON of it; in a
        # region (which a person fills well), less than MIN_FILL of it.
        box = person_box(probability, looked_at or (0, 0, w, h), MIN_PERSON if looked_at is None else MIN_FILL)
        if looked_at is None and self._quiet > 0:
            self._quiet -= 1
            box = None
        if box is None:
            if looked_at is not None:  # a region the mask does not fill: no new one for a while
                self._quiet = QUIET_CALLS
            self._region = None
            return
        model_hw = probability.shape  # (the model's input size too)
        if looked_at is not None:
            # Where the mask reaches the region's side and the frame goes on, the person may too.
            sx, sy = (looked_at[2] - looked_at[0]) / model_hw[1], (looked_at[3] - looked_at[1]) / model_hw[0]
            reach = MARGIN * max(looked_at[2] - looked_at[0], looked_at[3] - looked_at[1])
            for i, limit in enumerate(looked_at):
                edge = w if i % 2 == 0 else h
                if abs(box[i] - limit) <= 2 * (sx if i % 2 == 0 else sy) and 0 < limit < edge:
                    box[i] += reach if i >= 2 else -reach
        wanted = fit(box, frame_hw, model_hw)
        kept = self._region
        if wanted is None or kept is None or not _holds(kept, box, wanted, frame_hw):
            self._region = wanted


def person_box(probability: np.ndarray, area: Region, least: float = 0.0) -> list[float] | None:
    """The box (x0, y0, x1, y1, frame pixels) of the model's mask over `area` (the frame's
    pixels it saw): the columns and rows it crosses for at least MIN_RUN of the map (so a stray
    pixel or two is left out), or None for nobody (or for a mask that covers less than `least`
    of the map: what a model makes of an empty room's texture). Projections, not connected
    parts: a tenth of the time."""
    ph, pw = probability.shape
    mask = cv2.compare(probability, PERSON, cv2.CMP_GT)
    cols = cv2.reduce(mask, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255
    rows = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255
    xs, ys = np.flatnonzero(cols >= MIN_RUN * ph), np.flatnonzero(rows >= MIN_RUN * pw)
    if len(xs) == 0 or len(ys) == 0 or int(cols.sum()) < least * ph * pw:
        return None
    x0, y0, x1, y1 = area
    sx, sy = (x1 - x0) / pw, (y1 - y0) / ph
    return [x0 + xs[0] * sx, y0 + ys[0] * sy, x0 + (xs[-1] + 1) * sx, y0 + (ys[-1] + 1) * sy]


def fit(box, frame_hw: tuple[int, int], model_hw: tuple[int, int]) -> Region | None:
    """The region for a person's `box` (x0, y0, x1, y1): the model's shape (as far as the frame
    allows), the box and MARGIN around it, inside the frame, corners on the ALIGN grid; None
    when that is about the whole frame."""
    h, w = frame_hw
    aspect = model_hw[1] / model_hw[0]
    x0, y0, x1, y1 = box
    grow = 1 + 2 * MARGIN
    rh = max((y1 - y0) * grow, (x1 - x0) * grow / aspect, MIN_HEIGHT * h)
    rh = min(rh, h)
    rw = min(w, max(rh * aspect, (x1 - x0) * grow))
    if rw >= WHOLE * w and rh >= WHOLE * h:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = _aligned(min(max(cx - rw / 2, 0), w - rw), w)
    top = _aligned(min(max(cy - rh / 2, 0), h - rh), h)
    right = min(w, _aligned(left + rw + ALIGN - 1, w))
    bottom = min(h, _aligned(top + rh + ALIGN - 1, h))
    return left, top, right, bottom


def _aligned(v: float, limit: int) -> int:
    return min(int(v) // ALIGN * ALIGN, limit // ALIGN * ALIGN) if v < limit else limit


def _holds(kept: Region, box, wanted: Region, frame_hw: tuple[int, int]) -> bool:
    """Whether the kept region still serves: it holds the box with a third of the margin to
    spare (where the frame goes on) and is not much looser than the wanted one (so the model's
    input stays still while the person sits still)."""
    kx0, ky0, kx1, ky1 = kept
    wx0, wy0, wx1, wy1 = wanted
    h, w = frame_hw
    spare = MARGIN / 3 * max(box[2] - box[0], box[3] - box[1])
    inside = ((kx0 == 0 or box[0] - kx0 >= spare) and (ky0 == 0 or box[1] - ky0 >= spare)
              and (kx1 == w or kx1 - box[2] >= spare) and (ky1 == h or ky1 - box[3] >= spare))
    return inside and (kx1 - kx0) * (ky1 - ky0) <= 1.6 * (wx1 - wx0) * (wy1 - wy0)


def thumbnail(frame: yuv.Frame, halvings: yuv.Halvings | None) -> np.ndarray:
    """The frame's luma, THUMB_ROWS high (from the shared halvings: the levels the model's input
    and the blur make anyway, and three small ones)."""
    h, w = yuv.frame_size(frame)
    tw = max(1, round(w * THUMB_ROWS / h))
    return (halvings or yuv.Halvings(frame)).shrink(0, min(THUMB_ROWS, h), min(tw, w))


def placed(probability: np.ndarray, region: Region, frame_hw: tuple[int, int],
           size: tuple[int, int]) -> np.ndarray:
    """The model's `probability` over `region` placed on a map of the whole frame at `size`
    (height, width): bilinear, pixel centres aligned, 0 outside the region."""
    mh, mw = probability.shape
    h, w = frame_hw
    oh, ow = size
    x0, y0, x1, y1 = region
    out = np.zeros(size, np.float32)
    u0, u1 = round(x0 * ow / w), round(x1 * ow / w)
    v0, v1 = round(y0 * oh / h), round(y1 * oh / h)
    # Map pixel u's centre is at frame x (u + 0.5) * w / ow; model pixel j's at
    # x0 + (j + 0.5) * (x1 - x0) / mw. Only the region's part of the map is drawn.
    kx, ky = mw / (x1 - x0), mh / (y1 - y0)
    inverse = np.float32([[w / ow * kx, 0, ((u0 + 0.5) * w / ow - x0) * kx - 0.5],
                          [0, h / oh * ky, ((v0 + 0.5) * h / oh - y0) * ky - 0.5]])
    cv2.warpAffine(probability, inverse, (u1 - u0, v1 - v0), dst=out[v0:v1, u0:u1],
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out
