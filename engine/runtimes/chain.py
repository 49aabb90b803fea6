"""The chain of runtimes for one model: the first that loads serves, and one that fails at load
or at run time is dropped, visibly (a log line, a metric, its name in /healthz and in the session
stats), the same input going to the next, so a stream never freezes or goes black because a
GPU runtime broke."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .base import Runtime, RuntimeFailure, in_chunks, run_tensors
from .probe import available_onnx_providers, module_available, tensorrt_available, torch_cuda_possible

log = logging.getLogger("camfx.runtime")


@dataclass
class Candidate:
    """One runtime the chain may use: a name, and how to load it."""

    name: str
    load: Callable[[], Runtime]


class RuntimeChain(Runtime):
    """The first candidate that loads serves; on a failure the next takes over (see module doc).

    `on_fallback(model, failed, reason)` is called for every candidate dropped, for metrics.
    Thread-safe: sessions share one instance per model.
    """

    def __init__(
        self,
        model: str,
        candidates: list[Candidate],
        on_fallback: Callable[[str, str, str], None] = lambda model, failed, reason: None,
    ):
        self.model = model
        self._candidates = list(candidates)
        self._on_fallback = on_fallback
        self._lock = threading.Lock()
        self.failures: list[str] = []  # "name: reason", in order
        self._current: Runtime | None = None
        with self._lock:
            self._load_next()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._current.name if self._current is not None else "none"

    @property
    def max_batch(self) -> int:  # type: ignore[override]
        return self._current.max_batch if self._current is not None else 1

    def _drop(self, failed: str, reason: str) -> None:
        self.failures.append(f"{failed}: {reason}")
        self._on_fallback(self.model, failed, reason)

    def _load_next(self) -> None:
        while self._candidates:
            candidate = self._candidates.pop(0)
            try:
                self._current = candidate.load()
            except Exception as exc:  # a runtime that cannot load this model: try the next
                log.warning("model %s: %s failed to load (%s); trying the next", self.model, candidate.name, exc)
                self._drop(candidate.name, f"load: {exc}")
                continue
            log.info("model %s: using %s", self.model, self._current.name)
            return
        self._current = None
        raise RuntimeFailure(f"no runtime could load model {self.model!r}: {'; '.join(self.failures) or 'none available'}")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._with_fallback(lambda runtime: in_chunks(runtime.run, inputs, runtime.max_batch, np.concatenate))

    def run_tensor(self, inputs):
        import torch

        return self._with_fallback(
            lambda runtime: in_chunks(lambda part: run_tensors(runtime, part), inputs, runtime.max_batch, torch.cat)
        )

    def _with_fallback(self, call):
        while True:
            runtime = self._current
            if runtime is None:
                raise RuntimeFailure(f"model {self.model!r} has no working runtime left: {'; '.join(self.failures)}")
            try:
                return call(runtime)
            except Exception as exc:
                with self._lock:
                    if self._current is runtime:  # another thread may have moved on already
                        log.error("model %s: %s failed at run time (%s); falling back", self.model, runtime.name, exc)
                        self._drop(runtime.name, f"run: {exc}")
                        self._load_next()


def candidates_for(
    model_path: Path, threads: int = 1, engine: Path | None = None, batch: bool = False
) -> list[Candidate]:
    """The chain for one ONNX model on this machine, most preferred first. `engine`: a built
    TensorRT plan for it (from the cache), if there is one. `batch`: runtimes should accept
    several frames per run (onnxruntime then needs the onnx package to free the batch axis)."""
    chain = []
    if engine is not None and engine.is_file() and tensorrt_available():
        chain.append(Candidate("tensorrt", lambda: _tensorrt(engine)))
    batch = batch and module_available("onnx")
    for provider in available_onnx_providers():
        if provider == "CPUExecutionProvider" and torch_cuda_possible():
            chain.append(Candidate("torch:cuda", lambda: _torch(model_path, "cuda")))
        chain.append(
            Candidate(
                f"onnxruntime:{provider}",
                lambda p=provider: _onnxruntime(model_path, p, threads=threads, batch=batch),
            )
        )
    return chain


def _tensorrt(plan: Path) -> Runtime:
    from .tensorrt import TensorRTRuntime

    return TensorRTRuntime(plan)


def _torch(model_path: Path, device: str) -> Runtime:
    from .torch import TorchRuntime

    return TorchRuntime(model_path, device)


def _onnxruntime(model_path: Path, provider: str, **options) -> Runtime:
    from .onnxruntime import OnnxRuntime

    return OnnxRuntime(model_path, provider, **options)


def load_chain(
    model_name: str,
    model_path: Path,
    threads: int = 1,
    engine: Path | None = None,
    on_fallback: Callable[[str, str, str], None] = lambda model, failed, reason: None,
    batch: bool = False,
) -> RuntimeChain:
    """The chain for `model_path`, loaded: the most preferred runtime that loads serves."""
    return RuntimeChain(model_name, candidates_for(model_path, threads, engine, batch), on_fallback)
