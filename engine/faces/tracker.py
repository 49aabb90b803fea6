"""Faces followed from frame to frame. The detectors (on overlapping squares of the frame; the
full-range one when the short-range one finds nobody, so a face 40 px high in a 720p frame is
found) run about once a second while a face is tracked (to see who else is there), three times
a second while nobody is; in between, the landmark model runs on the square the previous
landmarks give, every TRACK_EVERY-th frame, and only when the face moved: while the square's
picture stays the same (a still face; a thumbnail compared) the last landmarks are kept, up to
STILL_STEPS steps. With a helper pool the models run beside the frames, not on their path.

Between landmark runs the face is carried at its own speed: the shift of the landmarks' centre
between their last two runs, per frame, moves the newest landmarks (all by the same offset, so
masks drawn on a grid anchored to the face are kept) to the frame being processed, and moves the
square the next run looks in to where the face will be. The models' result is thereby placed on
this frame, although with a helper pool it comes from a frame or a few before.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from ..media import yuv
from . import geometry as g
from .models import FaceModels, detector_yuv, face_patch_yuv

TRACK_EVERY = 4  # frames per tracking step: landmarks at 7.5 Hz, carried at the face's speed between
DETECT_EVERY = 8  # tracking steps between detections while a face is tracked (32 frames, ~1 s)
SEARCH_EVERY = 3  # and while none is (12 frames)
MATCH_IOU = 0.3  # a detection this close to the tracked face is the same face
# A still face: the square's THUMB x THUMB area-averaged luma within these levels of the last
# landmarks' (mean and largest cell; a 1-px move of a face's edges exceeds them).
THUMB, STILL_MEAN, STILL_MAX = 16, 0.75, 3.0
STILL_STEPS = 4  # landmarks at least every 4 steps (~0.5 s) even so
STILL_SPEED = 0.5  # px per frame: a landmarks' centre moving slower than this is a still face's jitter
CARRY_STEPS = 2  # the landmarks are carried at most this many steps' frames past where they were found
MIN_SCORE = 0.65  # detections weaker than this are not followed (the detector's own 0.5 finds a helmet a face)


@dataclass(frozen=True)
class Faces:
    """The faces in one picture, in its pixels: every face's box (x0, y0, x1, y1), the main
    face's (largest and nearest the centre) first, and the main face's 468 landmarks."""

    boxes: tuple[np.ndarray, ...] = ()
    points: np.ndarray | None = field(default=None, repr=False)
    size: tuple[int, int] = (0, 0)  # (height, width) of the picture they are in

    @property
    def main(self) -> np.ndarray | None:
        return self.boxes[0] if self.boxes else None

    def mapped(self, x0: float, y0: float, scale: float, size: tuple[int, int]) -> Faces:
        """The same faces in a crop starting at (x0, y0), scaled by `scale`, of `size`."""
        offset = np.float32([x0, y0, x0, y0])
        if scale == 1:  # a window of the picture's own pixels: a shift alone
            boxes = tuple(b - offset for b in self.boxes)
            points = None if self.points is None else self.points - offset[:2]
        else:
            boxes = tuple((b - offset) * np.float32(scale) for b in self.boxes)
            points = None if self.points is None else (self.points - offset[:2]) * np.float32(scale)
        return Faces(boxes, points, size)


def main_first(faces: list[g.Detection], height: int, width: int) -> list[g.Detection]:
    """Detections ordered main face first: the largest, nearest the centre (size over 1 + 2 x
    the distance from the centre in frame widths)."""
    def weight(face):
        b = face.box
        side = max(b[2] - b[0], b[3] - b[1])
        dist = math.hypot((b[0] + b[2]) / 2 - width / 2, (b[1] + b[3]) / 2 - height / 2) / width
        return side / (1 + 2 * dist)
    return sorted(faces, key=weight, reverse=True)


def points_box(points: np.ndarray) -> np.ndarray:
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return np.float32([x0, y0, x1, y1])


@dataclass
class _Job:
    """What one tracking step runs on: inputs cut from the frame on the frame's own path."""

    detect: tuple[np.ndarray, float] | None  # detector_yuv() when detection is due
    patch: tuple | None  # face_patch_yuv() for the tracked square (made RGB beside the frame)
    roi: g.Roi | None
    size: tuple[int, int]
    frame: int = 0  # the frame's number (FaceTracker's count)
    thumb: np.ndarray | None = None  # the luma of roi's square, THUMB x THUMB, float32
    still: bool = False  # the face has not moved: the last landmarks stand


@dataclass
class _State:
    roi: g.Roi | None = None
    thumb: np.ndarray | None = None  # of the square the landmarks came from (with thumb_roi)
    thumb_roi: g.Roi | None = None
    still: int = 0  # steps that kept the landmarks
    others: list[np.ndarray] = field(default_factory=list)  # the other faces' boxes, last detection
    faces: Faces = field(default_factory=Faces)
    since_detect: int = DETECT_EVERY
    at: int = 0  # the frame the landmarks were found in
    velocity: tuple[float, float] = (0.0, 0.0)  # the face's, px per frame (0 while still)

    def ahead(self, frame: int, track_every: int) -> tuple[float, float]:
        """How far the face has moved from where its landmarks were found by `frame`."""
        vx, vy = self.velocity
        if (vx == 0 and vy == 0) or self.faces.points is None:
            return 0.0, 0.0
        frames = min(max(frame - self.at, 0), CARRY_STEPS * track_every)
        return vx * frames, vy * frames


class FaceTracker:
    """One stream's faces. `step(frame)` starts (or runs, inline) the next tracking step on every
    `track_every`-th frame and returns the newest `Faces`; at most one step is in flight: frames
    that come while it runs are not tracked (the drop policy), they reuse its result."""

    def __init__(self, models: FaceModels, helper: Executor | None = None, detect_every: int = DETECT_EVERY,
                 track_every: int = TRACK_EVERY):
        self._models = models
        self._helper = helper
        self._detect_every = detect_every
        self._track_every = track_every
        self._frames = 0
        self._stepped = -TRACK_EVERY * 100  # the frame the last step started on
        self._state = _State()
        self._lock = threading.Lock()
        self._in_flight: Future | None = None
        self.steps = 0  # tracking steps run, and the seconds they took (on the helper pool or inline)
        self.busy_seconds = 0.0
        self.busy_cpu_seconds = 0.0  # and the CPU time of the thread that ran them

    def step(self, frame: yuv.Frame, halvings: yuv.Halvings | None = None,
             later: Callable[[Callable[[], None]], None] | None = None) -> Faces:
        """`later`: where to leave the start of a step on the helper pool, when it should wait
        until the caller has done with this frame (its inputs are cut from the frame now)."""
        self._frames += 1
        if self._in_flight is not None and not self._in_flight.done():
            return self.faces
        with self._lock:
            state = self._state
        # A face just found waits for its first landmarks no longer than the next frame.
        awaited = state.roi is not None and state.faces.points is None
        if self._frames - self._stepped < self._track_every and not awaited:
            return self.faces
        self._stepped = self._frames
        job = self._prepare(frame, halvings)
        if self._helper is None:
            self._run(job)
        elif later is None:
            self._start(job)
        else:
            later(lambda: self._start(job))
        return self.faces

    def _start(self, job: _Job) -> None:
        self._in_flight = self._helper.submit(self._run, job)  # the reference keeps it alive

    @property
    def in_flight(self) -> Future | None:
        """The step running on the helper pool (None when none has started)."""
        return self._in_flight

    @property
    def faces(self) -> Faces:
        """The newest faces, carried to the last frame given to `step` (see the module's notes)."""
        with self._lock:
            state = self._state
        dx, dy = state.ahead(self._frames, self._track_every)
        faces = state.faces
        if dx == 0 and dy == 0:
            return faces
        shift = np.float32([dx, dy, dx, dy])
        return Faces((faces.boxes[0] + shift, *faces.boxes[1:]), faces.points + shift[:2], faces.size)

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def _prepare(self, frame: yuv.Frame, halvings: yuv.Halvings | None) -> _Job:
        size = yuv.frame_size(frame)
        with self._lock:
            state = self._state
        roi, number = state.roi, self._frames
        due = state.since_detect >= (self._detect_every if roi is not None else SEARCH_EVERY)
        detect = detector_yuv(frame, halvings) if due else None
        if roi is None:
            return _Job(detect, None, None, size, number)
        if _is_still(frame, state):  # the same picture: the same landmarks, no patch to cut
            return _Job(detect, None, roi, size, number, still=True)
        dx, dy = state.ahead(number, self._track_every)  # the square goes where the face went
        if dx or dy:
            roi = g.Roi(roi.cx + dx, roi.cy + dy, roi.side, roi.angle)
        # The square's thumbnail goes with the landmarks it gives, for the next steps to compare.
        return _Job(detect, face_patch_yuv(frame, roi), roi, size, number, _thumb(frame, roi))

    def _run(self, job: _Job) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        try:
            self._track(job)
        finally:
            self.steps += 1
            self.busy_seconds += time.perf_counter() - start
            self.busy_cpu_seconds += time.thread_time() - cpu_start

    def _track(self, job: _Job) -> None:
        height, width = job.size
        with self._lock:
            state = self._state
        roi, others, since, points = job.roi, state.others, state.since_detect + 1, None
        thumb, thumb_roi, still, at = state.thumb, state.thumb_roi, 0, job.frame
        if job.still and state.faces.points is not None:
            points, still, at = state.faces.points, state.still + 1, state.at
        elif job.patch is not None:
            patch, scale, origin = job.patch
            points, presence = self._models.landmarks(yuv.to_rgb(patch), job.roi, origin, scale)
            thumb, thumb_roi = job.thumb, job.roi
            if presence <= 0:  # the face left the square: lost, look for it on the next step
                points, roi, since = None, None, max(since, SEARCH_EVERY)
        if job.detect is not None:
            small, scale = job.detect
            rgb = yuv.to_rgb(small)
            # The short-range detector (cheap) finds faces from ~85 px high in a 720p frame; the
            # full-range one (twice the cost) from ~40 px: asked only when the first finds nobody.
            found = [d for d in self._models.detect_tiled(rgb) if d.score >= MIN_SCORE] or \
                [d for d in self._models.detect_tiled(rgb, full_range=True) if d.score >= MIN_SCORE]
            found = [_scaled(d, scale) for d in found]
            found = main_first(found, height, width)
            since, others = 0, [d.box for d in found[1:]]
            tracked = points_box(points) if points is not None else None
            if not found:
                roi, points = None, None
            elif tracked is None or g.iou(tracked, found[0].box[None])[0] < MATCH_IOU:
                # Nothing tracked, or the main face is someone else now: start on the detection;
                # its landmarks come with the next step.
                roi, points = g.roi_from_detection(found[0]), None
        if points is not None:
            roi = g.roi_from_landmarks(points)
            boxes = (points_box(points), *others)
        elif roi is not None:
            half = roi.side / g.ROI_SCALE / 2
            boxes = (np.float32([roi.cx - half, roi.cy - half, roi.cx + half, roi.cy + half]), *others)
        else:
            boxes = tuple(others)
        if points is None:
            thumb = thumb_roi = None
        velocity = _velocity(state, points, at) if not still else (0.0, 0.0)
        with self._lock:
            self._state = _State(roi, thumb, thumb_roi, still, list(others), Faces(boxes, points, job.size), since,
                                 at, velocity)


def _velocity(before: _State, points: np.ndarray | None, at: int) -> tuple[float, float]:
    """The face's speed (px per frame) from the shift of the landmarks' centre since the last
    ones; none when there were none, or the shift is a still face's jitter."""
    last = before.faces.points
    if points is None or last is None or at <= before.at:
        return 0.0, 0.0
    frames = at - before.at
    vx = float(points[:, 0].mean() - last[:, 0].mean()) / frames
    vy = float(points[:, 1].mean() - last[:, 1].mean()) / frames
    return (vx, vy) if math.hypot(vx, vy) >= STILL_SPEED else (0.0, 0.0)


def _is_still(frame: yuv.Frame, state: _State) -> bool:
    """Whether the square the last landmarks came from holds the same picture in this frame."""
    if state.thumb is None or state.faces.points is None or state.still >= STILL_STEPS:
        return False
    change = np.abs(_thumb(frame, state.thumb_roi) - state.thumb)
    return float(change.mean()) <= STILL_MEAN and float(change.max()) <= STILL_MAX


def _thumb(frame: yuv.Frame, roi: g.Roi) -> np.ndarray:
    """The luma of the roi's upright square, area-averaged to THUMB x THUMB (float32). The square
    is cut to a whole multiple of THUMB: OpenCV's area resize takes its fast path only for
    whole ratios (0.06 ms for a 400-px square, against 0.4 ms at 400 / 16 = 25.2)."""
    h, w = yuv.frame_size(frame)
    cell = max(1, min(int(roi.side), h, w) // THUMB)
    side = cell * THUMB
    x0 = min(max(0, int(roi.cx - side / 2)), w - side)
    y0 = min(max(0, int(roi.cy - side / 2)), h - side)
    square = yuv.planes(frame)[0][y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(square, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def _scaled(face: g.Detection, scale: float) -> g.Detection:
    return g.Detection(face.box * np.float32(scale), face.score, face.keypoints * np.float32(scale))
