"""The `diffusion` effect's generator: a `StreamStylizer` fed the newest frame, off the frame path.

Generation is far slower than the camera on a CPU (and can be on a GPU), so it never sits in the
per-frame pipeline. The session offers each frame to a one-place newest-wins slot; a generator
task takes the newest, restyles it on the diffusion thread and publishes the result; the
pipeline composites the newest published result with the current frame and mask at the
camera's rate (`camfx.models.diffusion_compose`). Nothing queues: frames offered while the
generator is busy are replaced, not kept.

Weights are loaded once per model and shared by all sessions (`DiffusionModels`); each session
has its own `StreamStylizer` (prompt embeddings, fixed noise, buffers). torch is imported only
when a model is first used: the base install serves every other effect without it. Where
`camfx export engines --diffusion` exported a model's UNet / TAESD, they run on TensorRT or
onnxruntime with torch as the fallback (`camfx.engine.diffusion_runtime`; `runtimes()` says which).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from . import effects, yuv
from .frame_slot import FrameSlot
from .params import Params, ParamsError
from .rate import RateMeter

log = logging.getLogger("camfx.diffusion")

TURBO = "stabilityai/sd-turbo"
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
RANDOM = "random/sd-turbo"  # full-size architecture, untrained: for benchmarks, no download


@dataclass(frozen=True)
class DiffusionModelSpec:
    """How to load one servable model. `model_id`, `taesd_id`, `lora_id`: hub ids or folders."""

    model_id: str
    taesd_id: str = "madebyollin/taesd"
    lora_id: str | None = None
    random_weights: bool = False


def default_specs(random_weights: bool = False) -> dict[str, DiffusionModelSpec]:
    """The names users pick in `diffusion_model`: sd-turbo, SD 1.5 + LCM-LoRA, and (for
    benchmarks, when asked for) random weights."""
    specs = {
        TURBO: DiffusionModelSpec(TURBO),
        LCM_LORA: DiffusionModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", lora_id=LCM_LORA),
    }
    if random_weights:
        specs[RANDOM] = DiffusionModelSpec(RANDOM, random_weights=True)
    return specs


def missing_extra() -> str | None:
    """None when the diffusion extra is installed, else what to do about it. Looks, does not
    import: torch would cost the server seconds and memory before anyone asks for diffusion."""
    for module in ("torch", "diffusers", "transformers"):
        if importlib.util.find_spec(module) is None:
            return f"the diffusion effect needs the diffusion extra ({module} is missing): pip install 'camfx[diffusion]'"
    return None


class DiffusionModels:
    """Servable diffusion models by name; weights load on first use, once, and are shared.

    exported: run the UNet / TAESD on the runtime chain where `camfx export engines --diffusion`
    exported these weights under `cache` (the engine cache by default); torch where it did not.
    on_fallback(model, runtime, reason): called when one of their runtimes is dropped (metrics).
    """

    def __init__(
        self,
        specs: dict[str, DiffusionModelSpec] | None = None,
        *,
        exported: bool = True,
        cache: Path | None = None,
        on_fallback: Callable[[str, str, str], None] = lambda model, runtime, reason: None,
    ):
        self.specs = specs if specs is not None else default_specs()
        self._parts: dict[str, Any] = {}
        self._errors: dict[str, Exception] = {}  # models that failed to load, and why
        self._lock = threading.Lock()
        self._missing_extra = missing_extra()
        self._exported, self._cache, self._on_fallback = exported, cache, on_fallback

    def check(self, params: Params) -> None:
        """Raises ParamsError (a 422) for a model this server does not serve or cannot load."""
        if params.effect != "diffusion":
            return
        if self._missing_extra:
            raise ParamsError([{"field": "effect", "message": self._missing_extra}])
        name = params.diffusion_model
        if name not in self.specs:
            raise ParamsError([{
                "field": "diffusion_model",
                "message": f"unknown model {name!r}; this server serves: {', '.join(sorted(self.specs))}",
            }])
        if name in self._errors:
            raise ParamsError([{"field": "diffusion_model", "message": str(self._errors[name])}])

    def parts(self, name: str):
        """The loaded weights of `name` (blocking: call from the diffusion thread)."""
        with self._lock:
            if name in self._errors:
                raise self._errors[name]
            if name not in self._parts:
                from camfx.models.diffusion import load_parts

                limit_torch_threads()
                spec = self.specs[name]
                start = time.perf_counter()
                try:
                    self._parts[name] = load_parts(
                        spec.model_id, taesd_id=spec.taesd_id, lora_id=spec.lora_id,
                        random_weights=spec.random_weights,
                    )
                except Exception as exc:
                    self._errors[name] = exc
                    raise
                parts = self._parts[name]
                log.info("diffusion model %s: loaded on %s (%s) in %.1f s",
                         name, parts.device, str(parts.dtype).removeprefix("torch."), time.perf_counter() - start)
                if self._exported:
                    self._parts[name] = self._accelerated(name, parts)
            return self._parts[name]

    def _accelerated(self, name: str, parts):
        """`parts` with the UNet / TAESD on the runtime chain where they were exported."""
        from .diffusion_runtime import accelerate_parts

        try:
            return accelerate_parts(parts, name, self._cache, on_fallback=self._on_fallback)
        except Exception as exc:  # a broken cache must not stop the model: torch serves it as before
            log.warning("diffusion model %s: exported parts not used (%s); torch serves it", name, exc)
            return parts

    def loaded(self) -> list[str]:
        # No lock: /healthz calls this on the event loop, and a load holds the lock for minutes.
        return sorted(list(self._parts))

    def runtimes(self) -> dict[str, dict[str, Any]]:
        """Per loaded model, per part (unet, taesd_encoder, taesd_decoder): the runtime that served
        its last call ("tensorrt", "onnxruntime:...", "torch"; None before the first), the sizes
        exported for its weights, the runtime per size used so far, and the fallbacks so far.
        Plain data for /healthz; no lock, like `loaded`."""
        loaded = dict(self._parts)
        if not loaded:
            return {}  # and torch not imported: the base install has none
        from .diffusion_runtime import runtime_info

        return {name: runtime_info(parts) for name, parts in sorted(loaded.items())}


def diffusion_size(frame_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) the model works at: `long_side` on the frame's long side, the other side
    following the frame's shape, both multiples of 8 (TAESD's factor)."""
    h, w = frame_hw
    scale = long_side / max(h, w)
    return max(64, round(h * scale / 8) * 8), max(64, round(w * scale / 8) * 8)


@dataclass
class Stylized:
    """One generated picture and what it was made from."""

    rgb: np.ndarray
    mode: str
    serial: int  # increases with every new picture


class Generator:
    """One session's diffusion: takes the newest offered frame, publishes the newest picture."""

    def __init__(
        self,
        models: DiffusionModels,
        executor: Executor,
        on_error: Callable[[str, str], None] = lambda field, message: None,
        metrics=None,
    ):
        self._models = models
        self._metrics = metrics
        self._executor = executor
        self._on_error = on_error
        self._slot: FrameSlot[tuple[np.ndarray, np.ndarray | None, Params]] = FrameSlot()
        self._stylizer = None
        self._model_name: str | None = None
        self._backdrop_key: tuple | None = None
        self._failed_params: Params | None = None
        self.latest: Stylized | None = None
        self.status = "idle"  # idle | loading | running | error
        self.error: str | None = None
        self.stage_ms: dict[str, float] = {}  # the newest picture's (a copy: the stylizer's change as it works)
        self._rate = RateMeter(horizon_s=10.0)  # pictures can be seconds apart

    def check(self, params: Params) -> None:
        """Raises ParamsError (a 422) for a prompt the loaded text encoder cannot take whole.
        Before the model is loaded the generator reports it instead, over the control channel."""
        stylizer = self._stylizer
        if params.effect != "diffusion" or stylizer is None or self._model_name != params.diffusion_model:
            return
        try:
            stylizer.check_prompt(params.prompt)
        except ValueError as exc:
            raise ParamsError([{"field": "prompt", "message": str(exc)}]) from None

    def offer(self, frame: yuv.Frame, alpha: np.ndarray | None, params: Params) -> None:
        """Event loop: hand over the newest frame and its person mask (replacing any not taken)."""
        if params != self._failed_params:  # after an error, wait for a change of parameters
            self._slot.put((frame, alpha, params))

    async def run(self) -> None:
        """The session's generator task: runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            frame, alpha, params = await self._slot.take()
            try:
                await loop.run_in_executor(self._executor, self._generate, frame, alpha, params)
            except Exception as exc:  # missing weights, a prompt too long, out of memory...
                log.warning("diffusion failed (%s): %s", params.diffusion_model, exc)
                self.status, self.error, self._failed_params = "error", str(exc), params
                if self._metrics is not None:
                    self._metrics.diffusion_errors.inc()
                self._on_error(_field_of(exc), str(exc))

    def _generate(self, frame: yuv.Frame, alpha: np.ndarray | None, params: Params) -> None:
        """Diffusion thread."""
        stylizer = self._stylizer_for(params)
        height, width = diffusion_size(yuv.frame_size(frame), params.diffusion_size)
        if params.diffusion_mode == "backdrop" and params.backdrop_source == "prompt":
            # From the prompt alone: nothing new to make until the prompt or its settings change.
            key = (params.diffusion_model, params.prompt, params.seed, params.steps, height, width)
            if key == self._backdrop_key:
                return
            rgb = stylizer.txt2img(height, width, seed=params.seed)
            self._backdrop_key = key
        else:
            image = effects.model_input(frame, height, width)
            if params.diffusion_mode == "backdrop":  # from the room: the person taken out first
                image = self._room_without_person(image, alpha)
            skipped = stylizer.frames_skipped
            rgb = stylizer.img2img(image)
            self._backdrop_key = None
            if stylizer.frames_skipped != skipped:  # the similarity filter kept the last picture
                return
        self._publish(Stylized(rgb, params.diffusion_mode, (self.latest.serial + 1) if self.latest else 1), stylizer)

    def _room_without_person(self, rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
        """The camera picture with the person painted over by the last backdrop (or, before there
        is one, by a heavy blur of the room), so the backdrop shows the room, not a ghost."""
        if alpha is None:
            return rgb
        h, w = rgb.shape[:2]
        a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        a = np.clip(a * 1.5, 0.0, 1.0)  # reach past the soft edge, where hair still shows
        last = self.latest
        if last is not None and last.mode == "backdrop" and last.rgb.shape == rgb.shape:
            fill = last.rgb
        else:
            fill = cv2.blur(rgb, (max(3, w // 8) | 1, max(3, h // 8) | 1))
        return (rgb * (1.0 - a) + fill * a).astype(np.uint8)

    def _stylizer_for(self, params: Params):
        if self._stylizer is None or self._model_name != params.diffusion_model:
            from camfx.models.diffusion import StreamStylizer

            self.status = "loading"
            parts = self._models.parts(params.diffusion_model)
            self._stylizer = StreamStylizer(parts=parts, prompt=params.prompt, seed=params.seed)
            self._model_name = params.diffusion_model
            self._backdrop_key = None
        s = self._stylizer
        s.seed = params.seed
        s.prompt = params.prompt  # re-encoded only when it changed
        s.steps, s.strength = params.steps, params.strength
        s.feedback, s.stream_batch, s.guidance = params.diffusion_feedback, params.stream_batch, params.guidance
        s.similarity.threshold = params.similarity_threshold
        self.status, self.error, self._failed_params = "running", None, None
        return s

    def _publish(self, stylized: Stylized, stylizer) -> None:
        self.latest = stylized
        self.stage_ms = {k: round(v * 1000, 1) for k, v in stylizer.timings.items()}
        if self._metrics is not None:
            self._metrics.diffusion_pictures.inc()
            for stage, seconds in stylizer.timings.items():
                self._metrics.diffusion_stage_seconds.labels(stage).observe(seconds)
        self._rate.tick(time.perf_counter())

    @property
    def frames(self) -> int:
        """Pictures made so far."""
        return self.latest.serial if self.latest is not None else 0

    def stats(self) -> dict[str, Any]:
        fps = self._rate.rate(time.perf_counter())
        s = self._stylizer
        return {
            "status": self.status,
            "error": self.error,
            "fps": round(fps, 2),
            "frames": self.frames,
            "skipped": s.frames_skipped if s is not None else 0,
            "stage_ms": self.stage_ms,
            "lag_frames": s.lag_frames if s is not None else 0,
            "device": str(s.device) if s is not None else None,
        }


def _field_of(exc: Exception) -> str:
    """The parameter an error from the generator is about, for the page to show it there."""
    from camfx.models.diffusion import ModelNotFoundError, PromptTooLongError

    if isinstance(exc, PromptTooLongError):
        return "prompt"
    if isinstance(exc, ModelNotFoundError):
        return "diffusion_model"
    return "effect"


def limit_torch_threads() -> None:
    """Leave a core to decoding, encoding and compositing: diffusion on every core of a small
    CPU would starve the camera path (the one thing it must never do)."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
