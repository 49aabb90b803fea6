"""One interface over inference runtimes.

A `Backend` runs one model: a dict of named inputs in, a dict of named outputs out. Today's
runtime is onnxruntime with its execution providers (TensorRT, CUDA, CPU), tried in order of
preference among those installed; the first that loads wins, with one log line per model.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

log = logging.getLogger("camfx.backend")

# Most to least preferred; only those that onnxruntime reports as available are tried.
ONNX_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(RuntimeError):
    """No runtime could load or run a model."""


class Backend(ABC):
    name: str

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeBackend(Backend):
    def __init__(self, model_path: Path, provider: str, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Decoding and encoding share the cores with the model: keep it to `threads`.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), options, providers=[provider])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.name = f"onnxruntime:{provider}"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, inputs)))


def available_onnx_providers() -> list[str]:
    import onnxruntime as ort

    installed = set(ort.get_available_providers())
    return [p for p in ONNX_PROVIDER_PREFERENCE if p in installed]


def load_backend(model_name: str, model_path: Path, threads: int = 1) -> Backend:
    """The most preferred runtime that loads `model_path`; logs the choice and each failure."""
    failures = []
    for provider in available_onnx_providers():
        try:
            backend = OnnxRuntimeBackend(model_path, provider, threads=threads)
        except Exception as exc:  # a provider that cannot load this model: try the next
            log.warning("model %s: %s failed to load (%s); trying the next", model_name, provider, exc)
            failures.append(f"{provider}: {exc}")
            continue
        log.info("model %s: using %s", model_name, backend.name)
        return backend
    raise BackendError(f"no runtime could load model {model_name!r} ({model_path}): {'; '.join(failures) or 'none available'}")
