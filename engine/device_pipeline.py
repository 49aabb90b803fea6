"""The mask effects (blur, replace, remove) with the frame kept on a torch device.

On a GPU the frame is uploaded once (pinned host memory, an asynchronous copy on this
pipeline's own CUDA stream), then scaled, converted, segmented, refined, blurred and composited
there, and downloaded once. The same code runs on the CPU (device "cpu"), which is how it is
tested here against the numpy pipeline; on a CPU that numpy pipeline stays the default, because
OpenCV is faster there. Other effects (none, toon, diffusion) go to the numpy pipeline.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from . import yuv
from .runtimes.base import run_tensors
from .backgrounds import Backgrounds
from .effects import pow2_factor, stack_blur_size
from .mask import feather_radius, work_size
from .motion import BLOCK, MotionGate
from .params import Params, hex_to_rgb
from .pipeline import MAX_SKIPPED, NEEDS_MASK, Pipeline, Work, keep_probe_rows, motion_rows
from .segmenter import Segmenters
from .stage_clock import StageClock

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
        self._layer: tuple[tuple, torch.Tensor] | None = None  # (key, background image on the device)
        self._previous: torch.Tensor | None = None  # last alpha, for temporal smoothing
        self._frames = 0
        self._last_mask: tuple[str, torch.Tensor] | None = None  # (model, probability)
        self._gate = MotionGate(MAX_SKIPPED, _block_change)
        self.calls = self.reused = 0  # as `Segment`'s

    def model_calls(self) -> dict[str, int]:
        return {"calls": self.calls, "reused": self.reused}

    def process(self, work: Work) -> Work:
        if work.params.effect not in NEEDS_MASK:
            return self._fallback.process(work)
        stream = torch.cuda.stream(self._stream) if self._cuda else contextlib.nullcontext()
        with stream, torch.inference_mode():
            clock = StageClock(work.timings, self._stream.synchronize if self._cuda else None)
            frame = self._upload(work.image)
            clock.lap("convert_in")
            probability, small_y = self._segment(frame, work.params, work.quality.mask_every)
            clock.lap("segment")
            alpha = self._refine(frame, probability, small_y, work.params, work.quality.feather)
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
    def _segment(self, frame: torch.Tensor, p: Params, mask_every: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's person probability (model resolution) and this frame's luma shrunk for it
        (None when the probability is the last one: on the ladder's mask-every-n rungs)."""
        self._frames += 1
        last = self._last_mask
        same_model = last is not None and last[0] == p.model
        if same_model and self._frames % mask_every:
            self.reused += 1
            return last[1], None
        segmenter = self._segmenters.get(p.model)
        mh, mw = segmenter.input_hw
        y, u, v = yuv.planes(frame)
        small_y = _shrink(y, mh, mw)
        rgb = _to_rgb(small_y, _shrink(u, mh // 2, mw // 2), _shrink(v, mh // 2, mw // 2))
        if not same_model:
            self._gate.forget()
        if not self._gate.must_run(rgb[motion_rows(p, frame, rgb):], p.segment_skip):  # barely moved: as `Segment`
            self.reused += 1
            return last[1], small_y
        probability = run_tensors(segmenter.runtime, {"image": rgb[None]})["mask"][0, :, :, 0]
        self._last_mask = (p.model, probability)
        self.calls += 1
        return probability, small_y

    def _refine(self, frame: torch.Tensor, probability: torch.Tensor, small_y: torch.Tensor | None, p: Params,
                feather: bool) -> torch.Tensor:
        """As `mask.MaskRefiner`: to work size, smoothed over time, thresholded, feathered."""
        h, w = yuv.frame_size(frame)
        mh, mw = probability.shape
        wh, ww = work_size((h, w), (mh, mw))
        alpha = _resize(probability, wh, ww)
        if p.mask_smoothing > 0 and self._previous is not None and self._previous.shape == alpha.shape:
            alpha = torch.lerp(alpha, self._previous, p.mask_smoothing)
        self._previous = alpha
        if p.mask_mode == "threshold":
            alpha = (alpha >= p.mask_threshold).float()
        if p.mask_feather > 0 and feather:
            radius = feather_radius(p.mask_feather, wh)
            # At 720p the work size is the model's: the luma shrunk for the model is the guide.
            same = small_y is not None and (wh, ww) == (mh, mw)
            guide = small_y if same else _shrink(yuv.planes(frame)[0], wh, ww)
            alpha = _guided_filter(guide / 255.0, alpha, radius)
        return alpha.clamp_(0.0, 1.0)

    # -- effect -----------------------------------------------------------------------------
    def _effect(self, frame: torch.Tensor, alpha: torch.Tensor, p: Params) -> torch.Tensor:
        h, w = yuv.frame_size(frame)
        background = self._background(frame, p, h, w)
        out = torch.empty_like(frame)
        full, half = _resize(alpha, h, w), _resize(alpha, h // 2, w // 2)  # once each, as `composite`
        for a, f, b, o in zip((full, half, half), yuv.planes(frame), yuv.planes(background), yuv.planes(out)):
            ff, bf = f.float(), b.float()
            o.copy_((bf + (ff - bf) * a).round_().clamp_(0, 255))
        if p.probe:
            keep_probe_rows(frame, out)
        return out

    def _background(self, frame: torch.Tensor, p: Params, h: int, w: int) -> torch.Tensor:
        if p.effect == "blur":
            sigma = p.blur_strength * h / 720.0
            out = torch.empty_like(frame)
            for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
                dst.copy_(_blur(src, sigma if i == 0 else sigma / 2))
            return out
        if p.effect == "replace" and p.background == "image" and p.background_image in self._backgrounds:
            key = (p.background_image, h, w)
            if self._layer is None or self._layer[0] != key:
                image = self._backgrounds.frame(p.background_image, h, w)
                self._layer = (key, torch.from_numpy(image).to(self.device))
            return self._layer[1]
        colour = p.key_color if p.effect == "remove" else p.background_color
        out = torch.empty_like(frame)
        for plane, value in zip(yuv.planes(out), yuv.colour(hex_to_rgb(colour))):
            plane.fill_(value)
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


def _block_change(picture: torch.Tensor, seen: torch.Tensor) -> float:
    """`motion.block_change` on the model's RGB input in [0, 1] (H, W, 3): in 8-bit levels,
    block means rounded as OpenCV rounds them. One small read back to the host."""
    diff = ((picture - seen).abs() * 255.0).permute(2, 0, 1)[None]
    return float(F.avg_pool2d(diff, BLOCK).round().max())


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
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


def _blur(plane: torch.Tensor, sigma: float) -> torch.Tensor:
    """`effects.blurred` on one uint8 plane: a stack blur (triangular kernel) of a downscaled copy."""
    factor = pow2_factor(sigma / 2)
    h, w = plane.shape
    x = plane.float()[None, None]
    if factor > 1:
        x = F.avg_pool2d(x, factor, ceil_mode=True)
    radius = stack_blur_size(max(sigma / factor, 0.5)) // 2
    taps = torch.arange(-radius, radius + 1, device=plane.device, dtype=torch.float32)
    kernel = radius + 1 - taps.abs()
    kernel /= kernel.sum()
    # OpenCV's stack blur repeats the edge pixels beyond the border.
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0, 0].round_().clamp_(0, 255)
