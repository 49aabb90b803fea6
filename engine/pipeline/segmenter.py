"""Person segmentation: an I420 frame in, a probability map at model resolution out."""

from __future__ import annotations

import threading

import numpy as np

from camfx.models.registry import SEGMENTATION_MODELS, model_path

from ..media import yuv
from ..runtimes.base import Runtime
from ..runtimes.batching import BatchingRuntime
from ..runtimes.cache import cached_segmentation_plan
from ..runtimes.chain import load_chain


class Segmenter:
    """One segmentation model on its runtime: an I420 frame in, the person's probability out."""

    def __init__(self, name: str, runtime: Runtime):
        spec = SEGMENTATION_MODELS[name]
        self.name = name
        self.runtime = runtime
        self.input_hw = (spec.input_height, spec.input_width)

    def __call__(self, frame: yuv.Frame, halvings: yuv.Halvings | None = None) -> np.ndarray:
        """Person probability in [0, 1], float32 (model height, model width)."""
        return self.infer(self.picture(frame, halvings))

    def picture(self, frame: yuv.Frame, halvings: yuv.Halvings | None = None,
                region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """What the model sees of `frame` (or of its `region`, (x0, y0, x1, y1)): RGB uint8 at its
        input size (a new array)."""
        return yuv.model_input(frame, *self.input_hw, halvings, region)

    def infer(self, picture: np.ndarray) -> np.ndarray:
        """The person probability of a `picture`."""
        # RGB in [0, 1], NHWC; converted and scaled in one pass, into one new array.
        image = np.multiply(picture, np.float32(1.0 / 255.0), dtype=np.float32)[None]
        return self.runtime.run({"image": image})["mask"][0, :, :, 0]


class Segmenters:
    """Loads each segmentation model once; sessions share them (every runtime is thread-safe).

    batch: frames that sessions send at the same time go through one model call (see
    engine/batching.py); it pays on a GPU, where a call costs about the same for 1 or 4 frames.
    """

    def __init__(self, threads: int = 1, on_fallback=lambda model, failed, reason: None, batch: bool = False):
        self._threads = threads
        self._on_fallback = on_fallback
        self._batch = batch
        self._loaded: dict[str, Segmenter] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Segmenter:
        with self._lock:
            if name not in self._loaded:
                chain = load_chain(
                    name, model_path(name), self._threads, cached_segmentation_plan(name), self._on_fallback,
                    batch=self._batch,
                )
                self._loaded[name] = Segmenter(name, BatchingRuntime(chain) if self._batch else chain)
            return self._loaded[name]

    def load_all(self) -> None:
        for name in SEGMENTATION_MODELS:
            self.get(name)

    def runtimes(self) -> dict[str, str]:
        """Per loaded model, the runtime serving it."""
        with self._lock:
            return {name: seg.runtime.name for name, seg in self._loaded.items()}

    def fallbacks(self) -> dict[str, list[str]]:
        """Per model, the runtimes dropped so far and why."""
        with self._lock:
            return {name: list(getattr(seg.runtime, "failures", [])) for name, seg in self._loaded.items()}

    def batching(self) -> dict[str, dict[str, int]]:
        """Per model: model calls made and frames they carried (equal when nothing was batched)."""
        with self._lock:
            return {
                name: {"calls": seg.runtime.calls, "frames": seg.runtime.frames}
                for name, seg in self._loaded.items()
                if isinstance(seg.runtime, BatchingRuntime)
            }
