"""The per-session pipeline: a list of timed stages, `process(work) -> work`.

Runs in an executor thread (never on the event loop) and knows nothing of WebRTC, so it can
be tested on ndarrays.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Protocol

import cv2
import numpy as np

from camfx.models.registry import SEGMENTATION_MODELS

from ..diffusion.picture import StylizedPicture
from ..effects import compose, filters as effects
from ..effects.backgrounds import Backgrounds
from ..effects.mask import MaskRefiner, frame_guide, work_size
from ..faces.framing import Crop
from ..faces.models import FaceModels, shared_face_models
from ..faces.stages import (AutoFrame, FramingOut, KeepMainPerson, Light, LowLightStage, TouchUp, TrackFaces,
                            composite_light)
from ..faces.tracker import Faces
from ..media import yuv
from ..params import Params, hex_to_rgb
from .budget import LADDER, Quality
from .decisions import NEEDS_MASK, MaskSchedule, background, feather, needs_mask
from .person_region import PersonRegion, placed, thumbnail
from .segmenter import Segmenters

PROBE_ROWS = 16



@dataclass
class Work:
    """One frame on its way through the pipeline."""

    image: yuv.Frame  # I420 input (see `yuv`): the decoded frame's planes, read in place
    params: Params
    quality: Quality = LADDER[0]
    halvings: yuv.Halvings | None = None  # the image's, shared by all that shrink it
    t_recv: float = 0.0  # time.perf_counter() when the frame was received
    probability: np.ndarray | None = None  # the person's probability over the whole image (model or work resolution)
    alpha: np.ndarray | None = None  # refined mask, work resolution
    guide: Future | None = None  # the mask's GuidedFilter for this frame, being made
    background: Future | None = None  # the layer behind the person (I420), being made
    stylized: StylizedPicture | None = None  # the newest diffusion picture (diffusion effect)
    output: np.ndarray | None = None  # I420 result
    faces: Faces | None = None  # the faces found (engine/faces), in the image's pixels
    image_owned: bool = False  # image is a picture a stage made, not the camera's: later stages may write it
    camera: yuv.Frame | None = None  # the camera's picture, while image is a crop of it (framing)
    crop: Crop | None = None  # where the camera's view lies in image, when image is a window of camera
    # Work a stage starts once every stage has run (the face models' next step): beside the next
    # frame, not competing with this one for the cores.
    after: list[Callable[[], None]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds


class Stage(Protocol):
    """One step of a frame's way through the pipeline: reads what earlier stages left on the
    `Work` and adds its own result there; `name` is what its time is reported under."""

    name: str

    def __call__(self, work: Work) -> None: ...


def background_layer(
    backgrounds: Backgrounds, p: Params, frame: yuv.Frame, halvings: yuv.Halvings | None = None
) -> np.ndarray | None:
    """The I420 layer that shows where the mask says background (see `decisions.background`);
    None for `blur`, whose layer needs the mask (`composite_clean`)."""
    h, w = yuv.frame_size(frame)
    kind, rgb = background(p, backgrounds)
    if kind == "blur":
        return None
    if kind == "image":
        # A picture, or a video's current frame (played on its own thread; this never waits).
        return backgrounds.frame(p.background_image, h, w, p.background_fit, hex_to_rgb(p.background_color))
    return effects.solid(h, w, rgb)


def edge_colours(frame: yuv.Frame, alpha: np.ndarray, halvings: yuv.Halvings | None = None,
                 at_mask_size: bool = True) -> np.ndarray:
    """`effects.edge_colours` for `frame`, whose planes it shrinks to half the mask's size: at
    the mask's size, or at that half size."""
    halvings = halvings or yuv.Halvings(frame)
    h, w = max(1, alpha.shape[0] // 2), max(1, alpha.shape[1] // 2)
    small = cv2.merge([halvings.shrink(i, h, w) for i in range(3)])
    return effects.edge_colours(small, half_alpha(alpha, h, w), alpha.shape if at_mask_size else None)


def composite_clean(
    frame: yuv.Frame, layer: np.ndarray | None, alpha: np.ndarray, p: Params, halvings: yuv.Halvings | None = None,
    light: dict | None = None,
) -> np.ndarray:
    """The person over `layer` without the old background's colour on their edge; `layer` None
    is the room blurred from the room's own pixels (the person never smears into it), with the
    edge correction folded in while it is small. `light_wrap` lets the new background's light
    into the person's edge. `light`: `composite`'s arguments of light (see
    faces.stages.composite_light).

    The steps are `effects`' edge_colours, edge_correction, blurred and composite, made in fused
    passes (`effects.fused`) unless light wrap is on."""
    halvings = halvings or yuv.Halvings(frame)
    if p.light_wrap > 0 and p.effect != "remove":  # a key colour is not light
        return _composite_wrapped(frame, layer, alpha, p, halvings, light)
    if layer is None:
        # The blurred room takes its correction at the blur's own small size: the colours go
        # there from the half size they are made at, not by way of the mask's size.
        colours = fast_edge_colours(frame, alpha, halvings, at_mask_size=False)
        keep = effects.background_weights(alpha)
        layer = effects.blurred_clean(frame, p.blur_strength, keep, colours, alpha, halvings)
        return effects.composite(frame, layer, alpha, **(light or {}))
    colours = fast_edge_colours(frame, alpha, halvings)
    return effects.composite(frame, layer, alpha, offsets=effects.correction_offsets(colours, alpha), **(light or {}))


def fast_edge_colours(frame: yuv.Frame, alpha: np.ndarray, halvings: yuv.Halvings,
                      at_mask_size: bool = True) -> np.ndarray:
    """`edge_colours` by `effects.edge_colours_fast`, at the mask's size or at the half size it
    is made at."""
    h, w = max(1, alpha.shape[0] // 2), max(1, alpha.shape[1] // 2)
    small = np.empty((3, h, w), np.uint8)
    for i in range(3):
        halvings.shrink(i, h, w, dst=small[i])
    return effects.edge_colours_fast(small, half_alpha(alpha, h, w), alpha.shape if at_mask_size else None)


def half_alpha(alpha: np.ndarray, h: int, w: int) -> np.ndarray:
    """`alpha` area-averaged to (h, w), its half (rounded down): an odd last row or column is
    left out, which keeps OpenCV on its whole-ratio path (ten times faster than 455 -> 227)."""
    return cv2.resize(alpha[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


def _composite_wrapped(frame: yuv.Frame, layer: np.ndarray | None, alpha: np.ndarray, p: Params, halvings: yuv.Halvings,
                       light: dict | None) -> np.ndarray:
    """`composite_clean` with light wrap, step by step."""
    if layer is None:
        keep = effects.sure_weights(alpha)[1]
        add = cv2.split(edge_colours(frame, alpha, halvings, at_mask_size=False))
        layer = effects.blurred(frame, p.blur_strength, halvings, keep=keep, add=add, share=alpha)
        correction = None
    else:
        correction = effects.edge_correction(edge_colours(frame, alpha, halvings), alpha)
    h, w = alpha.shape
    small_frame = cv2.merge([halvings.shrink(i, h, w) for i in range(3)])
    small_layer = cv2.merge([cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA) for plane in yuv.planes(layer)])
    wrap = effects.light_wrap(small_frame, small_layer, alpha, p.light_wrap)
    correction = wrap if correction is None else tuple(c + x for c, x in zip(correction, wrap))
    return effects.composite(frame, layer, alpha, correction, **(light or {}))


class PrepareBackground:
    """Makes what needs only the frame on a helper thread, where it overlaps with segmentation
    (OpenCV and onnxruntime both release the GIL): first the mask's guide, which refinement needs
    as soon as the model is done, then the background layer. Inline without an executor."""

    name = "background"

    def __init__(self, backgrounds: Backgrounds, executor: Executor | None = None):
        self._backgrounds = backgrounds
        self._executor = executor

    def __call__(self, work: Work) -> None:
        p = work.params
        if p.effect not in NEEDS_MASK:  # diffusion's own modes make their layer elsewhere
            return
        jobs = []
        if feather(p, work.quality):
            spec = SEGMENTATION_MODELS[p.model]
            model_hw = (spec.input_height, spec.input_width)
            work.guide = Future()
            jobs.append((work.guide, partial(frame_guide, work.image, model_hw, p.mask_feather, work.halvings)))
        work.background = Future()
        jobs.append((work.background, partial(background_layer, self._backgrounds, p, work.image, work.halvings)))
        if self._executor is None:
            _fulfil(jobs)
            return
        self._executor.submit(_fulfil, jobs).add_done_callback(partial(_cancel_unless_ran, jobs))


def _fulfil(jobs: list[tuple[Future, Callable[[], object]]]) -> None:
    for future, make in jobs:
        try:
            future.set_result(make())
        except Exception as exc:
            future.set_exception(exc)


def _cancel_unless_ran(jobs: list[tuple[Future, Callable[[], object]]], submitted: Future) -> None:
    """The executor shut down before running the jobs: whoever waits on them must not wait for ever."""
    if submitted.cancelled():
        for future, _ in jobs:
            future.cancel()


class Segment:
    """The person probability at model resolution, from this frame, or the last one where the
    model need not look again (see `decisions.MaskSchedule`: the ladder's mask-every-n rungs,
    and `segment_skip` while the picture barely moves)."""

    name = "segment"

    def __init__(self, segmenters: Segmenters):
        self._segmenters = segmenters
        self._last: np.ndarray | None = None
        self.schedule = MaskSchedule()
        self.region = PersonRegion()  # where the model looks (`mask_region`, see person_region)

    def __call__(self, work: Work) -> None:
        p = work.params
        if not needs_mask(p) or not p.mask_region:
            self.region.reset()
            if not needs_mask(p):
                return
        frame, region = work.image, None
        if p.mask_region:
            thumb = thumbnail(frame, work.halvings)
            region = self.region.region(thumb, motion_rows(p, frame, thumb))
        if self.schedule.look(p.model, work.quality):
            segmenter = self._segmenters.get(p.model)
            picture = segmenter.picture(frame, work.halvings, region)
            if self.schedule.run(p.model, motion_view(p, frame, picture, region), p.segment_skip):
                self._last = self._mapped(segmenter.infer(picture), frame, segmenter.input_hw, region, p)
                if p.mask_region:
                    self._follow(segmenter, work, region)
        work.probability = self._last

    def _follow(self, segmenter, work: Work, region) -> None:
        """After the model looked at `region` (None: the whole frame). When the whole frame showed
        where she is, the mask is the region's at once, from the region her own mask settles on
        (twice at most): shown for a frame, the whole frame's mask or a first guess's would make
        the edge jump. Every CHECK_EVERY calls on a region, the whole frame is looked at too,
        for the region alone."""
        frame, p, whole = work.image, work.params, self._last
        for _ in range(2 if region is None else 0):
            if self.region.current is None or self.region.current == region:
                break
            region = self.region.current
            picture = segmenter.picture(frame, work.halvings, region)
            self._last = self._mapped(segmenter.infer(picture), frame, segmenter.input_hw, region, p)
            self.schedule.saw(motion_view(p, frame, picture, region))
            if self.region.current is None:  # the region's mask did not fill it: nobody there after all
                self._last = whole
        if region is not None and self.region.wants_check():
            self.region.check(segmenter.infer(segmenter.picture(frame, work.halvings)), yuv.frame_size(frame))

    def _mapped(self, probability: np.ndarray, frame, model_hw: tuple[int, int], region, p: Params) -> np.ndarray:
        """The model's probability as a map of the whole frame (model resolution when it saw the
        whole frame, else the mask's work resolution), and the next region from it."""
        frame_hw = yuv.frame_size(frame)
        if p.mask_region:
            self.region.update(probability, frame_hw, region)
        if region is not None:
            probability = placed(probability, region, frame_hw, work_size(frame_hw, model_hw))
        return probability


def motion_view(p: Params, frame: yuv.Frame, picture: np.ndarray, region=None) -> np.ndarray:
    """What the motion measure reads of the model's input: a region's brought to the scale the
    whole frame's input has (a region's larger picture averages sensor noise less, and would
    read as motion), below the probe rows. (Bilinear: OpenCV's area average at these ratios
    costs ten times as much. With segment_skip off nothing reads it.)"""
    if region is not None and p.segment_skip > 0:
        h, w = yuv.frame_size(frame)
        mh, mw = picture.shape[:2]
        size = (max(1, round(mw * (region[2] - region[0]) / w)), max(1, round(mh * (region[3] - region[1]) / h)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)
    return picture[motion_rows(p, frame, picture, region):]


def motion_rows(p: Params, frame: yuv.Frame, picture, region=None) -> int:
    """Where the picture (of the frame, or of its `region`) starts for the motion measure: below
    the probe rows when a latency probe stamps them (a frame id changes every frame; it is not
    the camera's picture)."""
    top, bottom = (0, yuv.frame_size(frame)[0]) if region is None else (region[1], region[3])
    if not p.probe or top >= PROBE_ROWS:
        return 0
    return -(-(PROBE_ROWS - top) * picture.shape[0] // (bottom - top)) + 1


class RefineMask:
    """The probability made an alpha mask at work resolution: thresholded or soft, smoothed over
    time, edges snapped to the image by the guided filter (unless the ladder turned it off)."""

    name = "refine"

    def __init__(self) -> None:
        self._refiner = MaskRefiner()

    def __call__(self, work: Work) -> None:
        if work.probability is None:
            return
        p = work.params
        work.alpha = self._refiner.refine(
            work.probability,
            work.image,
            mode=p.mask_mode,
            threshold=p.mask_threshold,
            smoothing=p.mask_smoothing,
            feather=feather(p, work.quality),
            guide=work.guide.result() if work.guide is not None else None,
            halvings=work.halvings,
        )


class ApplyEffect:
    """The output frame: the person over the background layer, the toon look, the newest
    diffusion picture composited, or the frame itself (`none`), probe rows kept when asked."""

    name = "effect"

    def __init__(self) -> None:
        self._layer: tuple[tuple, np.ndarray] | None = None  # (key, the stylized picture as I420)

    def __call__(self, work: Work) -> None:
        p, frame = work.params, work.image
        if p.effect == "none":
            work.output = frame
        elif p.effect == "toon":
            work.output = effects.toon(frame, min(p.toon_smoothing, work.quality.toon_passes), p.toon_edges)
        elif p.effect == "diffusion":
            work.output = self._diffusion(work)
        else:
            work.output = composite_clean(frame, work.background.result(), work.alpha, p, work.halvings,
                                          composite_light(work))
        if p.probe and work.output is not frame:
            # The untouched input rows let a latency probe match this output to its input.
            keep_probe_rows(frame, work.output)

    def _diffusion(self, work: Work) -> np.ndarray:
        """The newest generated picture composited with this frame (and this frame's mask)."""
        s, mode = work.stylized, work.params.diffusion_mode
        if s is None or (s.mode == "backdrop") != (mode == "backdrop"):
            return work.image  # nothing made for this mode yet: the camera's picture meanwhile
        key = (s.serial, mode == "backdrop", *yuv.frame_size(work.image))
        if self._layer is None or self._layer[0] != key:
            self._layer = (key, compose.layer(mode, s.rgb, *key[2:]))
        out = compose.blend(mode, work.image, self._layer[1], work.alpha)
        # The kept layer itself goes out in `frame` mode: the probe must not write into it.
        return out.copy() if out is self._layer[1] and work.params.probe else out


def keep_probe_rows(frame, output) -> None:
    """Copy the input's top PROBE_ROWS (and the chroma rows under them) into `output`, for a
    latency probe to match output to input. ndarrays or torch tensors alike."""
    for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(output))):
        rows = PROBE_ROWS if i == 0 else PROBE_ROWS // 2
        dst[:rows] = src[:rows]


class Pipeline:
    """Runs its stages in order, timing each into `work.timings`. A stage may also have
    `check(params)` (raise ParamsError for what it cannot do), `stats()` (a dict merged into the
    session's stats), `notices()` (errors for the user since the last call, (field, message))
    and `close()` (let go of what it holds): the stream calls these through the pipeline,
    whatever the stages are."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages

    def _each(self, method: str):
        return [getattr(stage, method) for stage in self.stages if hasattr(stage, method)]

    def check(self, params: Params) -> None:
        for check in self._each("check"):
            check(params)

    def stats(self) -> dict:
        out: dict = {}
        for stats in self._each("stats"):
            out.update(stats())
        return out

    def notices(self) -> list[tuple[str, str]]:
        return [notice for notices in self._each("notices") for notice in notices()]

    def stage(self, name: str):
        """The stage called `name` (None if there is none)."""
        return next((stage for stage in self.stages if stage.name == name), None)

    def close(self) -> None:
        for close in self._each("close"):
            close()

    def model_calls(self) -> dict[str, int] | None:
        """Frames the segmentation model ran on and frames that took its last mask (None
        without a Segment stage)."""
        segment = next((s for s in self.stages if s.name == "segment"), None)
        return None if segment is None else segment.schedule.counts()

    def process(self, work: Work) -> Work:
        if work.halvings is None:
            work.halvings = yuv.Halvings(work.image)
        for stage in self.stages:
            start = time.perf_counter()
            stage(work)
            work.timings[stage.name] = time.perf_counter() - start
        if work.output is None:
            work.output = work.image
        for start_job in work.after:
            start_job()
        return work


def default_pipeline(
    segmenters: Segmenters,
    backgrounds: Backgrounds,
    helper: Executor | None = None,
    diffusion=None,
    faces: FaceModels | None = None,
) -> Pipeline:
    """[low light -> faces -> framing ->] segment -> [people ->] refine mask -> (stylize) -> effect
    [-> touch-up -> light -> framing out]; with `helper`, the background layer is made, and faces tracked,
    alongside. The face stages (engine/faces) cost nothing while their parameters are off;
    `faces`: the face models (default: the process's, loaded when a stream first needs them).
    With `diffusion` (the device's DiffusionService), frames of the diffusion effect are offered
    to its scheduler and its newest picture composited."""
    stages: list[Stage] = [
        LowLightStage(), TrackFaces((lambda: faces) if faces is not None else shared_face_models, helper), AutoFrame(),
        PrepareBackground(backgrounds, helper), Segment(segmenters), KeepMainPerson(), RefineMask(),
    ]
    if diffusion is not None:
        from ..diffusion.stage import Stylize

        stages.append(Stylize(diffusion))
    return Pipeline(stages + [ApplyEffect(), TouchUp(), Light(), FramingOut()])
