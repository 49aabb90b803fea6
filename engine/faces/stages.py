"""The face stages of the pipeline, in the order they run (see pipeline.default_pipeline):

    low_light  gain and denoise of a dark picture (before anything looks at it)
    face       faces found and tracked (on the camera's whole picture)
    framing    the auto-frame crop: everything after runs on the cropped picture, at its own size
    ...        the mask stages (background, segment)
    people     only the main person's part of the mask stays (before refine)
    ...        refine, effect
    touch_up   skin smoothing; the toon look's outlines off the face's skin
    light      face exposure, key light, background dimmed, white balance, vignette
    framing_out  the cropped picture's output at the camera's size

Each does nothing, at no cost, while its parameters are off.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from ..media import yuv
from .framing import (WORK_STEP, AutoFramer, Crop, apply_crop, cut_window, is_full, scale_back, window, window_size,
                      working_size)
from .light import (BACKGROUND_DIM, GainPass, LightMaps, LowLight, face_exposure, face_frame, white_balance,
                    white_balance_shift)
from .models import FaceModels, shared_face_models
from .regions import SkinMasks
from .touchup import clean_toon_face, touch_up
from .tracker import Faces, FaceTracker

if TYPE_CHECKING:
    from ..params import Params
    from ..pipeline.stages import Work

MASK_EFFECTS = ("blur", "replace", "remove")


def wants_faces(p: Params) -> bool:
    """Whether a stage will look at faces (and so they are tracked)."""
    return p.framing != "off" or p.light != "off" or p.touch_up > 0 or p.people == "main" or p.effect == "toon"


def any_face_stage(p: Params) -> bool:
    """Whether any stage of this module does something to the frame."""
    return wants_faces(p) or p.low_light > 0 or p.vignette > 0


def _keep_probe_rows(source, output) -> None:
    from ..pipeline.stages import keep_probe_rows  # the pipeline imports this module

    keep_probe_rows(source, output)


def _own_output(work: Work) -> np.ndarray:
    """work.output as an array this stage may write: `none` passes the input itself through and
    `diffusion` may pass a picture it keeps, so those are copied first (once: a later stage
    finds the copy). An input a stage made (the auto-frame crop, low light's) is written in
    place, unless a probe needs its untouched rows."""
    output = work.output
    if output is work.image and work.image_owned and not work.params.probe and work.params.effect != "diffusion":
        return output
    if output is None or output is work.image or isinstance(output, tuple) or work.params.effect == "diffusion":
        source = work.image if output is None else output
        work.output = yuv.contiguous(source)
        if work.output is source:
            work.output = work.output.copy()
    return work.output


class LowLightStage:
    name = "low_light"

    def __init__(self) -> None:
        self._filter = LowLight()

    def __call__(self, work: Work) -> None:
        if work.params.low_light <= 0:
            return
        original = work.image
        work.image = self._filter(original, work.params.low_light)
        work.image_owned = True
        work.halvings = yuv.Halvings(work.image)
        if work.params.probe:
            _keep_probe_rows(original, work.image)


class TrackFaces:
    """The faces in this frame (see tracker): on work.faces, in the picture's pixels."""

    name = "face"

    def __init__(self, models: Callable[[], FaceModels] = shared_face_models, helper: Executor | None = None):
        self._models = models
        self._helper = helper
        self._tracker: FaceTracker | None = None

    @property
    def tracker(self) -> FaceTracker | None:
        return self._tracker

    def __call__(self, work: Work) -> None:
        if not wants_faces(work.params):
            if self._tracker is not None:
                self._tracker.reset()
            return
        if self._tracker is None:
            self._tracker = FaceTracker(self._models(), self._helper)
        # The step's models start once the frame is done: run beside its stages they slowed
        # them (the cores' caches, and the GIL for their Python), and their landmarks come in
        # time for the next frame either way.
        faces = self._tracker.step(work.image, work.halvings, later=work.after.append)
        work.faces = faces if faces.size == yuv.frame_size(work.image) else None


class AutoFrame:
    """The crop (see framing) applied: work.image becomes the crop at its own resolution, the
    faces move into its pixels, and work.camera keeps the camera's picture for `FramingOut`.
    That picture is a window of the camera's pixels around the crop (work.crop: where the crop
    lies in it), or for `replace` the crop resampled to its working size (so the new background,
    made at that size, does not zoom with the crop)."""

    name = "framing"

    def __init__(self) -> None:
        self._framer = AutoFramer()
        self.crop = None  # the last frame's crop (None while framing is off)
        self._size: tuple | None = None  # ((frame height, width), resampled?, the last working size)

    def _working_size(self, crop, h: int, w: int, resampled: bool = True) -> tuple[int, int]:
        """`working_size` (or `window_size`), kept while the crop still fits it with at most a
        step to spare: a crop whose width wobbles across a step keeps one size (and the mask's
        state with it)."""
        size = working_size(crop, h, w) if resampled else window_size(crop, h, w)
        kept = self._size
        if kept is not None and kept[:2] == ((h, w), resampled) and size[1] <= kept[2][1] <= size[1] + WORK_STEP:
            return kept[2]
        self._size = ((h, w), resampled, size)
        return size

    def __call__(self, work: Work) -> None:
        p = work.params
        if p.framing == "off":
            self._framer, self.crop, self._size = AutoFramer(), None, None
            return
        h, w = yuv.frame_size(work.image)
        faces = work.faces or Faces()
        crop = self._framer.update(list(faces.boxes), h, w, p.framing)
        self.crop = crop
        if is_full(crop, h, w):
            return
        work.camera = work.image
        if p.effect == "replace":
            size = self._working_size(crop, h, w)
            work.image = apply_crop(work.camera, crop, size)
            work.image_owned = True
            x0, y0, scale = crop.cx - crop.width / 2, crop.cy - crop.width * h / w / 2, size[1] / crop.width
        else:
            size = self._working_size(crop, h, w, resampled=False)
            y0, x0 = window(crop, h, w, size)
            work.image = cut_window(work.camera, (y0, x0), size)
            work.crop, scale = Crop(crop.cx - x0, crop.cy - y0, crop.width), 1.0
        work.halvings = yuv.Halvings(work.image)
        work.faces = faces.mapped(x0, y0, scale, size)


class FramingOut:
    """The output of a cropped frame brought to the camera's size (the encoder's, the viewer's),
    with the camera's own probe rows when a latency probe asks for them."""

    name = "framing_out"

    def __call__(self, work: Work) -> None:
        camera = work.camera
        if camera is None:
            return
        output = work.image if work.output is None else work.output
        h, w = yuv.frame_size(camera)
        if work.crop is not None:  # the crop's place in a window of the camera's pixels
            work.output = apply_crop(output, work.crop, (h, w), aspect=h / w)
        elif yuv.frame_size(output) != (h, w):
            work.output = scale_back(output, h, w)
        if work.params.probe:
            _keep_probe_rows(camera, work.output)


class KeepMainPerson:
    """people = main: the parts of the person probability that hold another face go to zero, so
    whoever else is in the picture goes with the background; the main face's person stays."""

    name = "people"

    def __call__(self, work: Work) -> None:
        faces = work.faces
        if work.params.people != "main" or work.probability is None or faces is None or len(faces.boxes) < 2:
            return
        probability = work.probability
        mh, mw = probability.shape
        h, w = yuv.frame_size(work.image)
        sx, sy = mw / w, mh / h
        count, labels = cv2.connectedComponents((probability > 0.5).astype(np.uint8))
        if count <= 1:
            return

        def label_of(box) -> int:
            x0, y0 = max(0, int(box[0] * sx)), max(0, int(box[1] * sy))
            x1, y1 = min(mw, int(box[2] * sx) + 1), min(mh, int(box[3] * sy) + 1)
            found = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=count)
            found[0] = 0
            return int(found.argmax()) if found.any() else 0

        main = label_of(faces.boxes[0])
        others = {label_of(b) for b in faces.boxes[1:]} - {0, main}
        if others:
            work.probability = np.where(np.isin(labels, list(others)), np.float32(0), probability)


class TouchUp:
    """touch_up > 0: the face's skin smoothed; toon: the face's skin without outlines."""

    name = "touch_up"

    def __init__(self) -> None:
        self._masks = SkinMasks()

    def __call__(self, work: Work) -> None:
        p = work.params
        points = work.faces.points if work.faces is not None else None
        if points is None or (p.touch_up <= 0 and p.effect != "toon") or p.effect == "diffusion":
            return
        output = _own_output(work)
        if p.effect == "toon":
            clean_toon_face(output, points, self._masks)
        else:
            touch_up(output, points, p.touch_up, self._masks)
        if p.probe:
            _keep_probe_rows(work.image, output)


def composite_light(work: Work) -> dict:
    """What `light` does as the effect stage composites, as `effects.composite`'s arguments
    (background_light, foreground_shift, background_shift), at no cost beyond the blend's pass:

    - Studio Light's dimmer room, while a face is lit: the background's luma times
      1 - BACKGROUND_DIM at the mask's full detail (blur and replace; not remove, whose key colour
      must stay the key colour);
    - the white balance of the camera's picture: of the whole output for blur (all of it is the
      camera's), of the person alone for replace and remove, so the user's picture and the key
      colour keep their colours. (Other effects: the light stage shifts the output.)"""
    p = work.params
    if p.light == "off" or p.effect not in MASK_EFFECTS:
        return {}
    lit = work.faces is not None and work.faces.points is not None
    shift = white_balance_shift(work.image)
    return {"background_light": 1.0 - BACKGROUND_DIM if lit and p.effect != "remove" else 1.0,
            "foreground_shift": shift, "background_shift": shift if p.effect == "blur" else (0, 0)}


class Light:
    """light studio / key and the vignette, on the output (see light). The face's exposure is
    eased over frames (no flicker as the face moves through uneven light); the light's map is
    kept while nothing it depends on changes, and a moving face's is one bigger map placed under
    the picture (see light.LightMaps); only the background's dim, from this frame's mask, is made
    every frame."""

    name = "light"
    EASE = 0.2  # of the new exposure taken each frame
    STEP_AT = 0.75  # of a step of the applied exposure (1/64)

    def __init__(self) -> None:
        self._exposure: float | None = None
        self._applied: float | None = None  # the exposure the light is made with
        self._maps = LightMaps()
        self._gain = GainPass()

    def __call__(self, work: Work) -> None:
        p = work.params
        if p.light == "off" and p.vignette <= 0:
            self._exposure = self._applied = None
            return
        points = work.faces.points if work.faces is not None else None
        output = _own_output(work)
        h, w = yuv.frame_size(output)
        if p.light != "off" and p.effect not in MASK_EFFECTS:  # (those were balanced as composited)
            white_balance(output)
        exposure = 1.0
        if points is not None and p.light != "off":
            now = face_exposure(output, points)
            self._exposure = now if self._exposure is None else self._exposure + self.EASE * (now - self._exposure)
            # Applied in steps of 1/64, each taken once the eased exposure is most of a step away:
            # no flicker between two steps (and no new light map) while it hovers between them.
            if self._applied is None or abs(self._exposure - self._applied) >= self.STEP_AT / 64:
                self._applied = round(self._exposure * 64) / 64
            exposure = self._applied
        face = None if points is None else face_frame(points)
        # The map holds the face's light alone (the room was dimmed as it was composited, see
        # composite_light): the same array, and so the same gain plan, while the face keeps its
        # size and the exposure its step.
        self._gain(output, self._maps.get(h, w, face, p.light, exposure, p.vignette))
        if p.probe:
            _keep_probe_rows(work.image, output)
