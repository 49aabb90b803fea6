"""One stream's diffusion worker: a `Stylizer` fed the newest frame, off the frame path.

Generation is far slower than the camera on a CPU (and can be on a GPU), so it never sits in the
per-frame pipeline. The stream offers each frame to a one-place newest-wins slot; the worker's
task takes the newest, restyles it on the diffusion thread and publishes the result; the
pipeline composites the newest published picture with the current frame and mask at the
camera's rate (camfx.engine.compose). Nothing queues: frames offered while the worker is busy
are replaced, not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from .. import effects, yuv
from ..frame_slot import FrameSlot
from ..params import Params, ParamsError, field_error
from ..rate import RateMeter
from .models import DiffusionModels

log = logging.getLogger("camfx.diffusion")


def diffusion_size(frame_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) the model works at: `long_side` on the frame's long side, the other side
    following the frame's shape, both multiples of 8 (TAESD's factor)."""
    h, w = frame_hw
    scale = long_side / max(h, w)
    return max(64, round(h * scale / 8) * 8), max(64, round(w * scale / 8) * 8)


@dataclass
class StylizedPicture:
    """One generated picture and what it was made from."""

    rgb: np.ndarray
    mode: str
    serial: int  # increases with every new picture


def room_without_person(rgb: np.ndarray, alpha: np.ndarray | None, last: StylizedPicture | None) -> np.ndarray:
    """The camera picture with the person painted over by the `last` backdrop (or, before there
    is one, by a heavy blur of the room), so the backdrop shows the room, not a ghost."""
    if alpha is None:
        return rgb
    h, w = rgb.shape[:2]
    a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    a = np.clip(a * 1.5, 0.0, 1.0)  # reach past the soft edge, where hair still shows
    if last is not None and last.mode == "backdrop" and last.rgb.shape == rgb.shape:
        fill = last.rgb
    else:
        fill = cv2.blur(rgb, (max(3, w // 8) | 1, max(3, h // 8) | 1))
    return (rgb * (1.0 - a) + fill * a).astype(np.uint8)


class DiffusionWorker:
    """One stream's diffusion: takes the newest offered frame, publishes the newest picture."""

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
        self.latest: StylizedPicture | None = None
        self.status = "idle"  # idle | loading | running | error
        self.error: str | None = None
        self.stage_ms: dict[str, float] = {}  # the newest picture's (a copy: the stylizer's change as it works)
        self._rate = RateMeter(horizon_s=10.0)  # pictures can be seconds apart

    def check(self, params: Params) -> None:
        """Raises ParamsError (a 422) for a prompt the loaded text encoder cannot take whole.
        Before the model is loaded the worker reports it instead, over the control channel."""
        stylizer = self._stylizer
        if params.effect != "diffusion" or stylizer is None or self._model_name != params.diffusion_model:
            return
        try:
            stylizer.check_prompt(params.prompt)
        except ValueError as exc:
            raise ParamsError([field_error("prompt", str(exc))]) from None

    def offer(self, frame: yuv.Frame, alpha: np.ndarray | None, params: Params) -> None:
        """Event loop: hand over the newest frame and its person mask (replacing any not taken)."""
        if params != self._failed_params:  # after an error, wait for a change of parameters
            self._slot.put((frame, alpha, params))

    async def run(self) -> None:
        """The worker's task: runs until cancelled."""
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
                image = room_without_person(image, alpha, self.latest)
            skipped = stylizer.frames_skipped
            rgb = stylizer.img2img(image)
            self._backdrop_key = None
            if stylizer.frames_skipped != skipped:  # the similarity filter kept the last picture
                return
        self._publish(StylizedPicture(rgb, params.diffusion_mode, (self.latest.serial + 1) if self.latest else 1), stylizer)

    def _stylizer_for(self, params: Params):
        if self._stylizer is None or self._model_name != params.diffusion_model:
            from .stylizer import Stylizer

            self.status = "loading"
            model = self._models.load(params.diffusion_model)
            self._stylizer = Stylizer(model.parts, model.networks, prompt=params.prompt, seed=params.seed)
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

    def _publish(self, stylized: StylizedPicture, stylizer) -> None:
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
    """The parameter an error from the worker is about, for the page to show it there."""
    from camfx.models.diffusion import ModelNotFoundError

    from .stylizer import PromptTooLongError

    if isinstance(exc, PromptTooLongError):
        return "prompt"
    if isinstance(exc, ModelNotFoundError):
        return "diffusion_model"
    return "effect"
