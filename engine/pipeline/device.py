"""The mask effects (blur, replace, remove) with the frame kept on a torch device.

On a GPU the frame is uploaded once (pinned host memory, an asynchronous copy on this
pipeline's own CUDA stream), then scaled, converted, segmented, refined, blurred and composited
there, and downloaded once. The same code runs on the CPU (device "cpu"), which is how it is
tested here against the numpy pipeline; on a CPU that numpy pipeline stays the default, because
OpenCV is faster there. Other effects (none, toon, diffusion), and any frame with a face stage on
(see faces.stages), go to the numpy pipeline.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..effects.backgrounds import Backgrounds
from ..effects.filters import EDGE_RADIUS, blur_shrink, stack_blur_size
from ..effects.mask import EDGE_GAIN, EDGE_LEVEL, MOVING_LEVELS, STILL_LEVELS, feather_radius, work_size
from ..faces.framing import cut_window
from ..faces.stages import any_face_stage
from ..media import yuv
from ..media.motion import BLOCK
from ..media.stage_clock import StageClock
from ..params import Params, hex_to_rgb
from ..runtimes.base import run_tensors
from .segmenter import Segmenters
from .decisions import NEEDS_MASK, MaskSchedule, background, feather
from .person_region import THUMB_ROWS, PersonRegion
from .stages import Pipeline, Work, keep_probe_rows, motion_rows

# OpenCV's I420 -> RGB (BT.601, limited range), so the model sees what the numpy path gives it.
_Y_SCALE, _V_R, _U_G, _V_G, _U_B = 1.164, 1.596, -0.391, -0.813, 2.018


class DevicePipeline:
    """Same interface as `Pipeline`: `process(work) -> work`, with the same stage names in
    `work.timings` (convert_in: the upload, segment, refine, effect, convert_out: the download)
    and the same quality ladder: a rung without feather skips the guided filter, `mask_every`
    reuses the model's last mask in between."""

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, fallback: Pipeline, device: str = "cuda"):
        self.device = torch.device(device)
        self._segmenters, self._backgrounds, self._fallback = segmenters, backgrounds, fallback
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._pinned: dict[tuple, torch.Tensor] = {}  # (role, *shape) -> page-locked host buffer
        self._layer: tuple[np.ndarray, torch.Tensor] | None = None  # (background image, its copy on the device)
        self._previous: torch.Tensor | None = None  # last alpha, for temporal smoothing
        self._previous_luma: torch.Tensor | None = None  # last work-size luma, to see motion
        self._last_mask: torch.Tensor | None = None  # the model's last probability
        self.schedule = MaskSchedule(_block_change)  # as `Segment`'s
        self.region = PersonRegion()  # where the model looks, as `Segment`'s (`mask_region`)

    def model_calls(self) -> dict[str, int]:
        return self.schedule.counts()

    # The stream's hooks (check, stats, notices, stage) are the numpy pipeline's stages'.
    def check(self, params) -> None:
        self._fallback.check(params)

    def stats(self) -> dict:
        return self._fallback.stats()

    def notices(self) -> list[tuple[str, str]]:
        return self._fallback.notices()

    def stage(self, name: str):
        return self._fallback.stage(name)

    def close(self) -> None:
        self._fallback.close()

    def process(self, work: Work) -> Work:
        # The face stages and the light wrap run there.
        if work.params.effect not in NEEDS_MASK or any_face_stage(work.params) or work.params.light_wrap > 0:
            return self._fallback.process(work)
        self._fallback.close()  # its stages are not used for this effect: let go of what they hold
        stream = torch.cuda.stream(self._stream) if self._cuda else contextlib.nullcontext()
        with stream, torch.inference_mode():
            clock = StageClock(work.timings, self._stream.synchronize if self._cuda else None)
            frame = self._upload(work.image)
            clock.lap("convert_in")
            probability, small_y = self._segment(frame, work.params, work.quality)
            clock.lap("segment")
            alpha = self._refine(frame, probability, small_y, work.params, feather(work.params, work.quality))
            clock.lap("refine")
            out = self._effect(frame, alpha, work.params)
            clock.lap("effect")
            work.output = self._download(out)
            clock.lap("convert_out")
        return work

    # -- transfers --------------------------------------------------------------------------
    def _upload(self, image: yuv.Frame) -> torch.Tensor:
        if not self._cuda:
            return torch.from_numpy(yuv.contiguous(image))
        h, w = yuv.frame_size(image)
        pinned = self._pinned_for((h * 3 // 2, w))
        for src, dst in zip(yuv.planes(image), yuv.planes(pinned.numpy())):
            dst[...] = src
        return pinned.to(self.device, non_blocking=True)

    def _download(self, out: torch.Tensor) -> np.ndarray:
        if not self._cuda:
            return out.numpy()
        pinned = self._pinned_for(tuple(out.shape), "out")
        pinned.copy_(out, non_blocking=True)
        self._stream.synchronize()
        return pinned.numpy().copy()

    def _pinned_for(self, shape: tuple[int, ...], role: str = "in") -> torch.Tensor:
        key = (role, *shape)
        if key not in self._pinned:
            self._pinned[key] = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        return self._pinned[key]

    # -- mask -------------------------------------------------------------------------------
    def _segment(self, frame: torch.Tensor, p: Params, quality) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `stages.Segment`: the person's probability over the whole frame (model resolution,
        or, from a region around her, the mask's work resolution) and this frame's luma shrunk
        for the model when it saw the whole frame (else None, as when the last probability is
        reused outright on the ladder's mask-every-n rungs). A few small reads back to the host:
        the region's thumbnail and the model's output, for where to look next."""
        h, w = yuv.frame_size(frame)
        region = None
        if p.mask_region:
            thumb = _shrink(yuv.planes(frame)[0], min(THUMB_ROWS, h), min(w, max(1, round(w * THUMB_ROWS / h))))
            thumb = thumb.round_().to(torch.uint8).cpu().numpy()
            region = self.region.region(thumb, motion_rows(p, frame, thumb))
        else:
            self.region.reset()
        if not self.schedule.look(p.model, quality):
            return self._last_mask, None
        segmenter = self._segmenters.get(p.model)
        small_y, rgb = self._picture(frame, segmenter.input_hw, region)
        if self.schedule.run(p.model, _motion_view(p, frame, rgb, region), p.segment_skip):
            self._last_mask = self._look(segmenter, frame, rgb, region, p)
            if p.mask_region:
                region = self._follow(segmenter, frame, region, p)
        # The luma shrunk for the model is the work luma only when the map is the model's own.
        return self._last_mask, small_y if self._last_mask.shape == small_y.shape else None

    def _follow(self, segmenter, frame: torch.Tensor, region, p: Params):
        """As `stages.Segment._follow`: the region's mask at once when the whole frame showed
        where she is, and the whole frame looked at every CHECK_EVERY calls; the region used."""
        whole = self._last_mask
        for _ in range(2 if region is None else 0):
            if self.region.current is None or self.region.current == region:
                break
            region = self.region.current
            _, rgb = self._picture(frame, segmenter.input_hw, region)
            self._last_mask = self._look(segmenter, frame, rgb, region, p)
            self.schedule.saw(_motion_view(p, frame, rgb, region))
            if self.region.current is None:  # the region's mask did not fill it: nobody there after all
                self._last_mask = whole
        if region is not None and self.region.wants_check():
            _, rgb = self._picture(frame, segmenter.input_hw, None)
            probability = run_tensors(segmenter.runtime, {"image": rgb[None]})["mask"][0, :, :, 0]
            self.region.check(probability.cpu().numpy(), yuv.frame_size(frame))
        return region

    def _picture(self, frame: torch.Tensor, model_hw: tuple[int, int], region) -> tuple[torch.Tensor, torch.Tensor]:
        """(the luma shrunk for the model, the model's RGB input) of the frame or of its region."""
        mh, mw = model_hw
        y, u, v = yuv.planes(frame) if region is None else cut_window(
            frame, (region[1], region[0]), (region[3] - region[1], region[2] - region[0]))
        small_y = _shrink(y, mh, mw)
        return small_y, _to_rgb(small_y, _shrink(u, mh // 2, mw // 2), _shrink(v, mh // 2, mw // 2))

    def _look(self, segmenter, frame: torch.Tensor, rgb: torch.Tensor, region, p: Params) -> torch.Tensor:
        """The model's probability of `rgb` (of `region`; None: the whole frame) as a map of the
        whole frame, and the next region from it."""
        probability = run_tensors(segmenter.runtime, {"image": rgb[None]})["mask"][0, :, :, 0]
        h, w = yuv.frame_size(frame)
        if p.mask_region:
            self.region.update(probability.cpu().numpy(), (h, w), region)
        if region is None:
            return probability
        return _placed(probability, region, (h, w), work_size((h, w), segmenter.input_hw))

    def _refine(self, frame: torch.Tensor, probability: torch.Tensor, small_y: torch.Tensor | None, p: Params,
                radius_720p: int) -> torch.Tensor:
        """As `mask.MaskRefiner`: to work size, steadied where still, steepened or thresholded,
        feathered."""
        h, w = yuv.frame_size(frame)
        mh, mw = probability.shape
        wh, ww = work_size((h, w), (mh, mw))
        alpha = _resize(probability, wh, ww)
        # At 720p the work size is the model's: the luma shrunk for the model is the work luma.
        same = small_y is not None and (wh, ww) == (mh, mw)
        luma = None
        if p.mask_smoothing > 0:
            # Rounded as the 8-bit luma the OpenCV path reads.
            luma = (small_y if same else _shrink(yuv.planes(frame)[0], wh, ww)).round()
            previous, previous_luma = self._previous, self._previous_luma
            if previous is not None and previous.shape == alpha.shape and previous_luma is not None \
                    and previous_luma.shape == luma.shape:
                motion = _box((luma - previous_luma).abs_(), 1)
                still = ((MOVING_LEVELS - motion) / (MOVING_LEVELS - STILL_LEVELS)).clamp_(0.0, 1.0)
                alpha = alpha + still * p.mask_smoothing * (previous - alpha)
            self._previous_luma = luma
        self._previous = alpha
        if p.mask_mode == "threshold":
            alpha = (alpha >= p.mask_threshold).float()
        else:
            alpha = ((alpha - EDGE_LEVEL) * EDGE_GAIN + 0.5).clamp_(0.0, 1.0)
        if radius_720p > 0:
            radius = feather_radius(radius_720p, wh)
            guide = luma if luma is not None else small_y if same else _shrink(yuv.planes(frame)[0], wh, ww)
            alpha = _guided_filter(guide / 255.0, alpha, radius)
        return alpha.clamp_(0.0, 1.0)

    # -- effect -----------------------------------------------------------------------------
    def _effect(self, frame: torch.Tensor, alpha: torch.Tensor, p: Params) -> torch.Tensor:
        h, w = yuv.frame_size(frame)
        colours = _edge_colours(frame, alpha)
        if p.effect == "blur":  # as `pipeline.composite_clean`: the correction goes into the small layer
            background, corrections = self._blurred(frame, alpha, p, [c * alpha for c in colours]), None
        else:
            background, corrections = self._layer_for(p, h, w), [c * alpha * (1.0 - alpha) for c in colours]
        out = torch.empty_like(frame)
        full, half = _resize(alpha, h, w), _resize(alpha, h // 2, w // 2)  # once each, as `composite`
        for i, (a, f, b, o) in enumerate(zip((full, half, half), yuv.planes(frame), yuv.planes(background),
                                             yuv.planes(out))):
            ff, bf = f.float(), b.float()
            mixed = (bf + (ff - bf) * a).round_()
            if corrections is not None:
                mixed += _resize(corrections[i], *o.shape).round_()
            o.copy_(mixed.clamp_(0, 255))
        if p.probe:
            keep_probe_rows(frame, out)
        return out

    def _blurred(self, frame: torch.Tensor, alpha: torch.Tensor, p: Params, add: list[torch.Tensor]) -> torch.Tensor:
        """As `effects.blurred` with the background's sure weights kept and `add` added."""
        sigma = p.blur_strength * yuv.frame_size(frame)[0] / 720.0
        keep = (1.0 - 2.0 * alpha).clamp_(0.0, 1.0).square_()  # `effects.sure_weights`' background
        out = torch.empty_like(frame)
        for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
            dst.copy_(_blur(src, sigma if i == 0 else sigma / 2, keep, add[i]))
        return out

    def _layer_for(self, p: Params, h: int, w: int) -> torch.Tensor:
        """The layer behind the person (see `decisions.background`), on the device."""
        kind, rgb = background(p, self._backgrounds)
        if kind == "image":
            # The same array while the picture is the same (a still, a video between frames).
            image = self._backgrounds.frame(p.background_image, h, w, p.background_fit, hex_to_rgb(p.background_color))
            if self._layer is None or self._layer[0] is not image:
                self._layer = (image, torch.from_numpy(image).to(self.device))
            return self._layer[1]
        out = torch.empty((h * 3 // 2, w), dtype=torch.uint8, device=self.device)
        for plane, value in zip(yuv.planes(out), yuv.colour(rgb)):
            plane.fill_(value)
        return out


def _edge_colours(frame: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
    """As `effects.edge_colours` (via `pipeline.edge_colours`): per plane, F - B at the mask's size,
    estimated at half of it."""
    h, w = max(1, alpha.shape[0] // 2), max(1, alpha.shape[1] // 2)
    small_alpha = _shrink(alpha, h, w)
    person = (2.0 * small_alpha - 1.0).clamp_(0.0, 1.0).square_()
    background = (1.0 - 2.0 * small_alpha).clamp_(0.0, 1.0).square_()
    person_sum, background_sum = _box(person, EDGE_RADIUS), _box(background, EDGE_RADIUS)
    sure = 1.0 / 255.0
    known = ((person_sum >= sure) & (background_sum >= sure)).float()
    person_scale, background_scale = known / person_sum.clamp(min=sure), known / background_sum.clamp(min=sure)
    out = []
    for plane in yuv.planes(frame):
        small = _shrink(plane, h, w).round_()
        difference = _box(small * person, EDGE_RADIUS) * person_scale - _box(small * background, EDGE_RADIUS) * background_scale
        out.append(_resize(difference, *alpha.shape))
    return out


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, half-pixel centres (as OpenCV's INTER_LINEAR); float32 out."""
    if tuple(x.shape[-2:]) == (height, width):
        return x.float()
    return F.interpolate(x.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def _shrink(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Area-average down by halving while it stays at least the target, then bilinear (as
    `yuv.PlaneHalvings.shrink`); float32 out."""
    x = plane.float()[None, None]
    while x.shape[-2] // 2 >= height and x.shape[-1] // 2 >= width:
        x = F.avg_pool2d(x, 2)
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0, 0]


def _to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """I420 planes (float, chroma at half size) -> RGB in [0, 1], (H, W, 3)."""
    h, w = y.shape
    u = F.interpolate(u[None, None], size=(h, w), mode="nearest")[0, 0] - 128.0
    v = F.interpolate(v[None, None], size=(h, w), mode="nearest")[0, 0] - 128.0
    luma = _Y_SCALE * (y - 16.0)
    rgb = torch.stack([luma + _V_R * v, luma + _U_G * u + _V_G * v, luma + _U_B * u], dim=-1)
    return rgb.round_().clamp_(0, 255) / 255.0


def _placed(probability: torch.Tensor, region, frame_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """As `person_region.placed`: the region's probability on a map of the whole frame at
    `size`, bilinear, pixel centres aligned, borders replicated inside the region, 0 outside."""
    mh, mw = probability.shape
    h, w = frame_hw
    x0, y0, x1, y1 = region
    oh, ow = size
    out = torch.zeros(size, dtype=torch.float32, device=probability.device)
    u0, u1 = round(x0 * ow / w), round(x1 * ow / w)
    v0, v1 = round(y0 * oh / h), round(y1 * oh / h)
    # Map pixel u's centre in model pixels, then in grid_sample's [-1, 1] (pixel centres).
    us = torch.arange(u0, u1, device=probability.device, dtype=torch.float32)
    vs = torch.arange(v0, v1, device=probability.device, dtype=torch.float32)
    j = ((us + 0.5) * w / ow - x0) * mw / (x1 - x0) - 0.5
    i = ((vs + 0.5) * h / oh - y0) * mh / (y1 - y0) - 0.5
    gy, gx = torch.meshgrid((2 * i + 1) / mh - 1, (2 * j + 1) / mw - 1, indexing="ij")
    out[v0:v1, u0:u1] = F.grid_sample(probability.float()[None, None], torch.stack([gx, gy], dim=-1)[None],
                                      mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    return out


def _motion_view(p: Params, frame: torch.Tensor, rgb: torch.Tensor, region) -> torch.Tensor:
    """As `stages.motion_view`: a region's input brought to the whole frame's scale for the
    motion measure (bilinear, 8-bit as OpenCV's), below the probe rows."""
    if region is not None and p.segment_skip > 0:
        h, w = yuv.frame_size(frame)
        mh, mw = rgb.shape[:2]
        size = (max(1, round(mh * (region[3] - region[1]) / h)), max(1, round(mw * (region[2] - region[0]) / w)))
        rgb = F.interpolate(rgb.permute(2, 0, 1)[None], size=size, mode="bilinear", align_corners=False)[0]
        rgb = (rgb.permute(1, 2, 0) * 255.0).round_() / 255.0
    return rgb[motion_rows(p, frame, rgb, region):]


def _block_change(picture: torch.Tensor, seen: torch.Tensor) -> float:
    """`motion.block_change` on the model's RGB input in [0, 1] (H, W, 3): in 8-bit levels,
    block means rounded as OpenCV rounds them. One small read back to the host."""
    diff = ((picture - seen).abs() * 255.0).permute(2, 0, 1)[None]
    return float(F.avg_pool2d(diff, BLOCK).round().max())


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """A mean over (2 radius + 1)^2 pixels, borders as OpenCV's default (reflect-101)."""
    k = 2 * radius + 1
    padded = F.pad(x[None, None], (radius, radius, radius, radius), mode="reflect")
    return F.avg_pool2d(padded, k, stride=1)[0, 0]


def _guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float = 1e-3) -> torch.Tensor:
    """As `mask.GuidedFilter` (He et al., 2010), on the device."""
    mean_i, mean_p = _box(guide, radius), _box(src, radius)
    var_i = _box(guide * guide, radius) - mean_i * mean_i
    a = (_box(guide * src, radius) - mean_i * mean_p) / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, radius) * guide + _box(b, radius)


def _blur(plane: torch.Tensor, sigma: float, keep: torch.Tensor | None = None,
          add: torch.Tensor | None = None) -> torch.Tensor:
    """`effects.blurred` on one uint8 plane: a stack blur (triangular kernel) of a downscaled copy,
    normalised by the `keep` weights (at any size) when given, plus `add` (at any size)."""
    factor = blur_shrink(sigma)
    h, w = plane.shape
    x = plane.float()[None, None]
    if factor > 1:
        x = F.avg_pool2d(x, factor, ceil_mode=True)
    radius = stack_blur_size(max(sigma / factor, 0.5)) // 2
    taps = torch.arange(-radius, radius + 1, device=plane.device, dtype=torch.float32)
    kernel = radius + 1 - taps.abs()
    kernel /= kernel.sum()

    def stack_blur(t: torch.Tensor) -> torch.Tensor:
        # OpenCV's stack blur repeats the edge pixels beyond the border.
        t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))

    if keep is None:
        x = stack_blur(x)
    else:
        x = x.round_()
        kept = _erode_cross(_resize(keep, *x.shape[-2:]))[None, None]
        fill = 0.005  # as `effects._FILL`
        x = (stack_blur(x * kept) + x * fill) / (stack_blur(kept) + fill)
    if add is not None:
        x = x + _resize(add, *x.shape[-2:])
    if keep is not None or add is not None:
        x = x.round_().clamp_(0, 255)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0, 0].round_().clamp_(0, 255)


def _erode_cross(x: torch.Tensor) -> torch.Tensor:
    """The minimum over each pixel and its four neighbours (OpenCV's erode with a 3x3 cross)."""
    p = F.pad(x[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    return torch.minimum(torch.minimum(torch.minimum(p[1:-1, 1:-1], p[:-2, 1:-1]), torch.minimum(p[2:, 1:-1], p[1:-1, :-2])),
                         p[1:-1, 2:])
