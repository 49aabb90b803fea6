"""What the streams of one process share: models, background images, thread pools, metrics and
the diffusion models. It keeps no list of streams: transports do (camfx.engine.transport)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import cv2

from .config import ServerConfig
from .diffusion.served import DiffusionModels
from .diffusion.service import DiffusionService
from .effects.backgrounds import Backgrounds
from .faces.models import FaceModels
from .metrics import Metrics
from .params import Params, ParamsError, field_error
from .pipeline.segmenter import Segmenters
from .pipeline.stages import default_pipeline
from .runtimes.probe import resolve_device

log = logging.getLogger("camfx.hub")


class Hub:
    """Loads the models once and owns the pools every stream's work runs on.

    pipeline_factory: makes each stream's pipeline (default: the OpenCV pipeline, or the device
    pipeline under `device` cuda); tests put slow or instrumented stages in here.
    """

    def __init__(self, config: ServerConfig, pipeline_factory: Callable[[], Any] | None = None):
        self.config = config
        cv2.setNumThreads(config.opencv_threads)  # process-wide, as OpenCV's pool is
        self.metrics = Metrics()
        self.device = resolve_device(config.device)
        if config.batch_sessions not in ("auto", "on", "off"):
            raise ValueError(f"batch_sessions must be auto, on or off, got {config.batch_sessions!r}")
        batch = config.batch_sessions == "on" or (config.batch_sessions == "auto" and self.device == "cuda")
        self.segmenters = Segmenters(threads=config.model_threads, on_fallback=self._count_fallback, batch=batch)
        self.backgrounds = Backgrounds()
        # Loaded when a stream first turns a face setting on (framing, light, touch-up, ...).
        self.faces = FaceModels(threads=config.model_threads, on_fallback=self._count_fallback)
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="camfx-worker")
        # Work a frame's pipeline hands off to run alongside itself (a separate pool: a worker
        # waiting on its own pool could deadlock it).
        self.helper = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="camfx-helper")
        # Diffusion runs on its own thread, one batch at a time, for every stream: it must never
        # take the workers' place, and two batches at once would only share the same cores or GPU.
        self.diffusion_models = DiffusionModels(config.diffusion_models, on_fallback=self._count_fallback)
        self.diffusion = DiffusionService(self.diffusion_models, self.metrics)
        self.metrics.watch_diffusion(self.diffusion)
        self._pipeline_factory = pipeline_factory or self._default_pipeline

    def load_models(self) -> None:
        """Load every segmentation model now (blocking), so the first stream does not wait."""
        self.segmenters.load_all()

    def runtimes(self) -> dict[str, Any]:
        """Per segmentation model: the runtime in use and those that failed (for the page)."""
        fallbacks = self.segmenters.fallbacks()
        return {name: {"runtime": runtime, "failed": fallbacks.get(name, [])}
                for name, runtime in self.segmenters.runtimes().items()}

    def _count_fallback(self, model: str, failed: str, reason: str) -> None:
        self.metrics.count_fallback(model, failed)

    def _default_pipeline(self):
        pipeline = default_pipeline(self.segmenters, self.backgrounds, self.helper, self.diffusion, self.faces)
        if self.device == "cuda":
            from .pipeline.device import DevicePipeline

            return DevicePipeline(self.segmenters, self.backgrounds, pipeline, "cuda")
        return pipeline

    def new_pipeline(self):
        return self._pipeline_factory()

    def check_params(self, params: Params) -> None:
        """What the schema cannot know: that a named background image exists, that this server
        serves the diffusion model named."""
        if params.background_image not in self.backgrounds:
            raise ParamsError([field_error("background_image", f"no background image {params.background_image!r}")])
        self.diffusion_models.check(params)

    def admit(self, params: Params) -> None:
        """Raises AdmissionError (a 503 with Retry-After) when a new stream with `params` would
        push the streams already served below their floor."""
        self.diffusion.admit(params)

    def shutdown(self) -> None:
        """Stop the pools and the diffusion thread (after every stream has closed)."""
        for pool in (self.executor, self.helper):
            pool.shutdown(wait=True, cancel_futures=True)
        self.diffusion.shutdown()
        self.backgrounds.close()
