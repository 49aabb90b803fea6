"""The two bundled face networks on the runtime chain: faces found in a picture, and a face's 468
landmarks from the rotated square around it. Inputs are RGB uint8 (any size); the frame-side
helpers cut those from an I420 frame cheaply (a shrunken copy, or just the face's patch)."""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from camfx.models.registry import model_path

from ..media import yuv
from ..runtimes.chain import RuntimeChain, load_chain
from . import geometry as g

DETECTOR, DETECTOR_FULL, LANDMARKS = "face_detector", "face_detector_full", "face_landmarks"
# The frame is shrunk to this before detection: a 16:9 frame's squares are then 216 px, just
# above the full-range detector's 192.
DETECT_LONG_SIDE = 384
MIN_PRESENCE_LOGIT = 0.0  # sigmoid 0.5: below it, the square holds no face (tracking lost)


class FaceModels:
    """Loads the detector and the landmark model on first use, once per process; thread-safe."""

    def __init__(self, threads: int = 1, on_fallback=lambda model, failed, reason: None):
        self._threads = threads
        self._on_fallback = on_fallback
        self._chains: dict[str, RuntimeChain] = {}
        self._lock = threading.Lock()

    def _chain(self, name: str) -> RuntimeChain:
        with self._lock:
            if name not in self._chains:
                self._chains[name] = load_chain(name, model_path(name), self._threads, None, self._on_fallback)
            return self._chains[name]

    def runtimes(self) -> dict[str, str]:
        """Per loaded face model, the runtime serving it."""
        with self._lock:
            return {name: chain.name for name, chain in self._chains.items()}

    def fallbacks(self) -> dict[str, list[str]]:
        """Per loaded face model, the runtimes dropped so far and why."""
        with self._lock:
            return {name: list(chain.failures) for name, chain in self._chains.items()}

    def detect(self, rgb: np.ndarray, full_range: bool = False) -> list[g.Detection]:
        """Faces in an RGB picture, in its pixels, best first. `full_range`: the detector made
        for faces up to ~5 m away (192-px input, about 3x the cost) instead of the short-range
        one (selfie distance, 128-px input)."""
        spec = g.FULL_RANGE if full_range else g.SHORT_RANGE
        matrix, left, top, side = g.letterbox(*rgb.shape[:2], spec.size)
        square = cv2.warpAffine(rgb, matrix, (spec.size, spec.size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT)
        image = np.multiply(square, np.float32(1 / 127.5), dtype=np.float32) - np.float32(1)
        out = self._chain(DETECTOR_FULL if full_range else DETECTOR).run({"image": image[None]})
        return g.decode(out["boxes"][0], out["scores"][0], left, top, side, spec)

    def detect_tiled(self, rgb: np.ndarray, full_range: bool = False) -> list[g.Detection]:
        """Faces in a picture of any shape: a landscape (or portrait) picture is covered by
        overlapping squares of its short side, each searched alone, so a face keeps the size
        the short-range detector needs (letterboxing 16:9 into a square would shrink it by
        almost half); faces found twice are merged."""
        h, w = rgb.shape[:2]
        short, long_ = min(h, w), max(h, w)
        count = math.ceil(long_ / short - 0.05)
        if count <= 1:
            return self.detect(rgb, full_range)
        found = []
        for i in range(count):
            start = round(i * (long_ - short) / (count - 1))
            tile = rgb[:, start : start + short] if w > h else rgb[start : start + short]
            offset = np.float32([start, 0] if w > h else [0, start])
            for face in self.detect(np.ascontiguousarray(tile), full_range):
                found.append(g.Detection(face.box + np.tile(offset, 2), face.score, face.keypoints + offset))
        found.sort(key=lambda face: -face.score)
        merged: list[g.Detection] = []
        for face in found:
            if not merged or (g.iou(face.box, np.stack([m.box for m in merged])) <= g.NMS_IOU).all():
                merged.append(face)
        return merged

    def landmarks(self, rgb: np.ndarray, roi: g.Roi, origin: tuple[float, float] = (0.0, 0.0), scale: float = 1.0):
        """(468 x 2 points in the picture's pixels, presence logit) for the face in `roi`.
        `rgb` may be a patch of the picture (see `face_patch`): picture pixel = patch pixel *
        `scale` + `origin`."""
        local = g.Roi((roi.cx - origin[0]) / scale, (roi.cy - origin[1]) / scale, roi.side / scale, roi.angle)
        size = g.LANDMARK_SIZE
        square = cv2.warpAffine(rgb, g.roi_to_input(local), (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        image = np.multiply(square, np.float32(1 / 255), dtype=np.float32)
        out = self._chain(LANDMARKS).run({"image": image[None]})
        points = g.landmarks_to_image(out["landmarks"][0], local) * np.float32(scale) + np.float32(origin)
        return points, float(out["presence"].reshape(-1)[0])


def detector_input(frame: yuv.Frame, halvings: yuv.Halvings | None = None) -> tuple[np.ndarray, float]:
    """The frame shrunk (long side DETECT_LONG_SIDE, even sides) as RGB, and the scale back."""
    small, scale = detector_yuv(frame, halvings)
    return yuv.to_rgb(small), scale


def detector_yuv(frame: yuv.Frame, halvings: yuv.Halvings | None = None) -> tuple[np.ndarray, float]:
    """`detector_input` before its conversion to RGB: the shrunk I420 frame (a new array), the
    scale back. The frame's path makes this; the RGB can be made beside it."""
    h, w = yuv.frame_size(frame)
    scale = min(1.0, DETECT_LONG_SIDE / max(h, w))
    sh, sw = max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2)
    return yuv.resize(frame, sh, sw, halvings=halvings), w / sw


def face_patch(frame: yuv.Frame, roi: g.Roi):
    """The part of the frame under `roi` (at any rotation) as RGB, and where it starts:
    (rgb, 1.0, (x0, y0)), the arguments `FaceModels.landmarks` takes after the square. The
    model's input is then sampled from it at full resolution, as from the whole frame."""
    patch = face_patch_yuv(frame, roi)
    return None if patch is None else (yuv.to_rgb(patch[0]), *patch[1:])


def face_patch_yuv(frame: yuv.Frame, roi: g.Roi):
    """`face_patch` before its conversion to RGB: (I420 copy of the part, 1.0, (x0, y0))."""
    h, w = yuv.frame_size(frame)
    reach = roi.side * 0.7072  # half the diagonal
    x0 = max(0, int(roi.cx - reach) // 2 * 2)
    y0 = max(0, int(roi.cy - reach) // 2 * 2)
    x1 = min(w, -(-int(roi.cx + reach + 1) // 2) * 2)
    y1 = min(h, -(-int(roi.cy + reach + 1) // 2) * 2)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    y, u, v = yuv.planes(frame)
    crop = (y[y0:y1, x0:x1], u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2])
    return yuv.contiguous(crop), 1.0, (float(x0), float(y0))


_shared: FaceModels | None = None
_shared_lock = threading.Lock()


def shared_face_models() -> FaceModels:
    """The process's face models (loaded on first use, by the first session that needs them)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceModels()
        return _shared
