"""The device's diffusion: one scheduler (camfx.engine.diffusion.scheduler) shared by every stream
of the process, the thread that runs its batches, and what a batch does with real networks.

Generation is far slower than the camera on a CPU (and can be on a GPU), so it never sits in the
per-frame pipeline: a stream's `Stylize` stage offers each frame to its handle (newest wins) and
composites the newest published picture at the camera's rate. The device thread takes batches
from the scheduler; a batch restyles its streams' frames with one TAESD encode, one UNet call
per denoising round and one decode (`img2img_batch`), each stream with its own prompt, noise,
steps, strength and filter. A stream whose part fails (its model cannot load, its prompt is too
long) gets the error; the others in the batch go on (the batch is rerun without it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..media import yuv
from ..params import Params, ParamsError, field_error
from .picture import StylizedPicture, field_of, room_without_person
from .scheduler import AdmissionError, Batch, Budget, DiffusionScheduler, Entry, Rung, StreamHandle, ladder
from .served import DiffusionModels

log = logging.getLogger("camfx.diffusion")


def budget_of(params: Params) -> Budget:
    return Budget(params.diffusion_fps or None, (params.diffusion_max_age_ms / 1000.0) or None)


def rungs_of(params: Params) -> tuple[Rung, ...]:
    return ladder(params.diffusion_size, params.steps, params.stream_batch)


@dataclass
class Job:
    """One frame offered for restyling, with what it needs on the device thread."""

    state: "StreamDiffusion"
    frame: yuv.Frame
    alpha: np.ndarray | None
    params: Params
    size: tuple[int, int]  # (height, width) the model works at


class StreamDiffusion:
    """One stream's state on the device thread: its `Stylizer` (prompt embedding, fixed noise,
    filter), the last backdrop's settings, status and errors for the user."""

    def __init__(self, models: DiffusionModels, metrics=None):
        self._models, self._metrics = models, metrics
        self.stylizer = None
        self.model_name: str | None = None
        self.backdrop_key: tuple | None = None
        self.serial = 0
        self.status = "idle"  # idle | loading | running | error
        self.error: str | None = None
        self.failed_params: Params | None = None  # after an error, wait for a change of parameters
        self.stage_ms: dict[str, float] = {}
        self.notices: deque[tuple[str, str]] = deque(maxlen=8)  # (field, message) for the user

    def stylizer_for(self, params: Params, rung: Rung):
        if self.stylizer is None or self.model_name != params.diffusion_model:
            from .stylizer import Stylizer

            self.status = "loading"
            model = self._models.load(params.diffusion_model)
            self.stylizer = Stylizer(model.parts, model.networks, prompt=params.prompt, seed=params.seed)
            self.model_name, self.backdrop_key = params.diffusion_model, None
        s = self.stylizer
        s.seed = params.seed
        s.prompt = params.prompt  # re-encoded only when it changed
        s.steps, s.strength = rung.steps, params.strength
        s.feedback, s.stream_batch, s.guidance = params.diffusion_feedback, rung.stream_batch, params.guidance
        s.similarity.threshold = params.similarity_threshold
        return s

    def publish(self, rgb: np.ndarray, mode: str) -> StylizedPicture:
        self.serial += 1
        self.status, self.error, self.failed_params = "running", None, None
        timings = self.stylizer.timings
        self.stage_ms = {k: round(v * 1000, 1) for k, v in timings.items()}
        if self._metrics is not None:
            self._metrics.diffusion_pictures.inc()
            for stage, seconds in timings.items():
                self._metrics.diffusion_stage_seconds.labels(stage).observe(seconds)
        return StylizedPicture(rgb, mode, self.serial)

    def fail(self, exc: Exception, params: Params) -> str:
        log.warning("diffusion failed (%s): %s", params.diffusion_model, exc)
        self.status, self.error, self.failed_params = "error", str(exc), params
        if self._metrics is not None:
            self._metrics.diffusion_errors.inc()
        self.notices.append((field_of(exc), str(exc)))
        return str(exc)


class DiffusionService:
    """The scheduler of this process's diffusion device and the thread that runs its batches.

    clock: the scheduler's (time.perf_counter, the clock frames are stamped with). knobs: the
    scheduler's (max_batch, window_s, floor, up_share, admit_share).
    """

    def __init__(self, models: DiffusionModels, metrics=None, clock: Callable[[], float] = time.perf_counter,
                 **knobs):
        self.models, self._metrics = models, metrics
        self.scheduler = DiffusionScheduler(clock, **knobs)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._start_lock = threading.Lock()

    # -- streams -------------------------------------------------------------------------------

    def check(self, params: Params, handle: StreamHandle | None = None, state: StreamDiffusion | None = None) -> None:
        """ParamsError (a 422) for a prompt the loaded text encoder cannot take whole, or for a
        rate or quality the device cannot hold next to its other streams (naming the limit)."""
        if params.effect != "diffusion":
            return
        stylizer = state.stylizer if state is not None else None
        if stylizer is not None and state.model_name == params.diffusion_model:
            try:
                stylizer.check_prompt(params.prompt)
            except ValueError as exc:
                raise ParamsError([field_error("prompt", str(exc))]) from None
        if handle is not None and budget_of(params) == handle.budget and rungs_of(params) == handle.rungs:
            return
        try:
            self.scheduler.admit(budget_of(params), rungs_of(params), handle)
        except AdmissionError as exc:
            raise ParamsError([field_error("diffusion_fps", str(exc))]) from None

    def admit(self, params: Params) -> None:
        """AdmissionError when a new stream with `params` would push the others below their floor."""
        if params.effect == "diffusion":
            self.scheduler.admit(budget_of(params), rungs_of(params))

    def open(self, params: Params) -> tuple[StreamHandle, StreamDiffusion]:
        """A stream's handle (AdmissionError when the device is full) and its device-side state."""
        handle = self.scheduler.open(params.diffusion_model, rungs_of(params), budget_of(params))
        self._start()
        return handle, StreamDiffusion(self.models, self._metrics)

    def configure(self, handle: StreamHandle, params: Params) -> None:
        budget, rungs = budget_of(params), rungs_of(params)
        if budget != handle.budget or rungs != handle.rungs or params.diffusion_model != handle.model:
            handle.update(rungs, budget, params.diffusion_model)

    def stats(self) -> dict[str, Any]:
        """Server-wide: streams, device busy share, batches per second, mean batch size."""
        return self.scheduler.stats()

    def stream_stats(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for handle in self.scheduler.handles():
            yield handle.number, handle.stats()

    # -- the device thread ---------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._loop, name="camfx-diffusion", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        scheduler = self.scheduler
        while not self._stopping:
            batch = scheduler.next_batch()
            if batch is None:
                scheduler.wait()
                continue
            pictures, errors = self._run(batch)
            scheduler.done(batch, pictures, errors)

    def _run(self, batch: Batch) -> tuple[dict[int, StylizedPicture], dict[int, str]]:
        """Device thread: one batch. Returns (pictures, errors) by stream number."""
        pictures: dict[int, StylizedPicture] = {}
        errors: dict[int, str] = {}
        together: list[tuple[Entry, Any, np.ndarray]] = []
        for entry in batch.entries:
            job: Job = entry.payload
            state, p, number = job.state, job.params, entry.stream.number
            try:
                stylizer = state.stylizer_for(p, entry.rung)
                height, width = job.size
                if p.diffusion_mode == "backdrop" and p.backdrop_source == "prompt":
                    # From the prompt alone: nothing new until the prompt or its settings change.
                    key = (p.diffusion_model, p.prompt, p.seed, entry.rung.steps, height, width)
                    if key != state.backdrop_key:
                        rgb = stylizer.txt2img(height, width, seed=p.seed)
                        state.backdrop_key = key
                        pictures[number] = state.publish(rgb, p.diffusion_mode)
                    continue
                image = yuv.model_input(job.frame, height, width)
                if p.diffusion_mode == "backdrop":  # from the room: the person taken out first
                    image = room_without_person(image, job.alpha, entry.stream.latest)
                state.backdrop_key = None
                together.append((entry, stylizer, image))
            except Exception as exc:  # missing weights, a prompt too long...
                errors[number] = state.fail(exc, p)
        for group in _by_networks(together):
            self._img2img(group, pictures, errors)
        return pictures, errors

    def _img2img(self, group: list[tuple[Entry, Any, np.ndarray]], pictures: dict, errors: dict) -> None:
        from .stylizer import img2img_batch

        skipped = [s.frames_skipped for _, s, _ in group]
        try:
            outs = img2img_batch([s for _, s, _ in group], [image for _, _, image in group])
        except Exception as exc:
            if len(group) == 1:
                entry = group[0][0]
                errors[entry.stream.number] = entry.payload.state.fail(exc, entry.payload.params)
                return
            for one in group:  # find the one that fails; the others still get their pictures
                self._img2img([one], pictures, errors)
            return
        for (entry, stylizer, _), out, before in zip(group, outs, skipped):
            if stylizer.frames_skipped == before:  # else the similarity filter kept the last picture
                pictures[entry.stream.number] = entry.payload.state.publish(out, entry.payload.params.diffusion_mode)

    def shutdown(self) -> None:
        self._stopping = True
        with self.scheduler._cond:
            self.scheduler._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _by_networks(items: list[tuple[Entry, Any, np.ndarray]]) -> list[list[tuple[Entry, Any, np.ndarray]]]:
    """One group per model (the scheduler's key already keeps one picture size per batch)."""
    groups: dict[int, list] = {}
    for item in items:
        groups.setdefault(id(item[1].networks), []).append(item)
    return list(groups.values())

