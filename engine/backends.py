"""One interface over inference runtimes, and the chain that falls back between them.

A `Backend` runs one model: a dict of named host arrays in, a dict of named host arrays out.
Runtimes, most preferred first (only those this machine has are tried):

    tensorrt           native TensorRT: a cached engine (see `camfx export engines`),
                       execute_async_v3 on device buffers, replayed as a CUDA graph
    onnxruntime:TensorrtExecutionProvider   fp16, engine and timing caches on disk
    onnxruntime:CUDAExecutionProvider       IO binding, outputs on the device until copied
    onnxruntime:CPUExecutionProvider        the path every machine has

`FallbackBackend` holds the chain for one model: the first that loads serves; one that fails at
load or at run time is dropped, visibly (a log line, a metric, its name in /healthz and in the
session stats), and the same input is run again on the next, so a stream never freezes or goes
black because a GPU runtime broke.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .engine_cache import cache_dir

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
    """onnxruntime with one execution provider. On a GPU provider the run goes through IO binding:
    inputs are copied to the device once, outputs stay there until copied back in one go."""

    def __init__(
        self, model_path: Path, provider: str, threads: int = 1, cache: Path | None = None,
        io_binding: bool | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Decoding and encoding share the cores with the model: keep it to `threads`.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads would spin for work, taking the cores the codecs need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_path), options, providers=[(provider, provider_options(provider, cache or cache_dir()))]
        )
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._device = "cpu" if provider == "CPUExecutionProvider" else "cuda"
        self._io_binding = self._device != "cpu" if io_binding is None else io_binding
        self.name = f"onnxruntime:{provider}"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._io_binding:
            return dict(zip(self._outputs, self._session.run(self._outputs, inputs)))
        binding = self._session.io_binding()
        for name, value in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self._outputs:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        return dict(zip(self._outputs, binding.copy_outputs_to_cpu()))

    def run_tensor(self, inputs):
        """torch tensors on the device in, on the device out: IO binding to their memory."""
        if self._device == "cpu":
            return _through_host(self, inputs)
        import torch

        torch.cuda.current_stream().synchronize()  # onnxruntime reads on its own stream
        binding = self._session.io_binding()
        for name, tensor in inputs.items():
            tensor = tensor.contiguous()
            binding.bind_input(name, "cuda", tensor.device.index or 0, np.float32, list(tensor.shape), tensor.data_ptr())
        outputs = {}
        device = next(iter(inputs.values())).device
        for out in self._session.get_outputs():
            tensor = torch.empty([d if isinstance(d, int) else 1 for d in out.shape], dtype=torch.float32, device=device)
            binding.bind_output(out.name, "cuda", device.index or 0, np.float32, list(tensor.shape), tensor.data_ptr())
            outputs[out.name] = tensor
        self._session.run_with_iobinding(binding)
        return outputs


def provider_options(provider: str, cache: Path) -> dict[str, str]:
    """Options per execution provider: fp16 and on-disk engine / timing caches for TensorRT."""
    if provider == "TensorrtExecutionProvider":
        return {
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache / "onnxruntime-trt"),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache / "onnxruntime-trt"),
        }
    if provider == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "True"}
    return {}


class TensorRTBackend(Backend):
    """A serialized TensorRT engine run with execute_async_v3 on device buffers allocated once
    (torch's CUDA allocator), pinned host staging buffers, its own CUDA stream, and the whole
    copy-in / execute / copy-out sequence captured once as a CUDA graph and replayed per frame.

    Shapes are fixed per instance (batch 1 at the engine's profile): the frame path has one
    input shape per model, and a fixed shape is what makes the graph replayable.
    """

    name = "tensorrt"

    def __init__(self, plan_path: Path, cuda_graph: bool = True):
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise BackendError("TensorRT needs a CUDA GPU")
        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise BackendError(f"could not deserialize {plan_path} (built for another GPU or TensorRT?)")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (pinned host, device)
        self._outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = [1 if d < 0 else d for d in self._engine.get_tensor_shape(name)]
            dtype = _TORCH_DTYPES[str(self._engine.get_tensor_dtype(name))](torch)
            device = torch.empty(shape, dtype=dtype, device="cuda")
            host = torch.empty(shape, dtype=dtype, pin_memory=True)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._context.set_input_shape(name, shape)
                self._inputs[name] = (host, device)
            else:
                self._outputs[name] = (host, device)
            self._context.set_tensor_address(name, device.data_ptr())
        self._graph = None
        if cuda_graph:
            self._enqueue()  # one plain run first: TensorRT allocates lazily
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._enqueue()
            self._graph = graph

    def _enqueue(self) -> None:
        for host, device in self._inputs.values():
            device.copy_(host, non_blocking=True)
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed")
        for host, device in self._outputs.values():
            host.copy_(device, non_blocking=True)

    def run_tensor(self, inputs):
        """Device tensors in and out: device-to-device copies around one execute_async_v3."""
        torch = self._torch
        self._stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._stream):
            for name, tensor in inputs.items():
                self._inputs[name][1].copy_(tensor, non_blocking=True)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            outputs = {name: device.clone() for name, (_, device) in self._outputs.items()}
        torch.cuda.current_stream().wait_stream(self._stream)
        return outputs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        for name, value in inputs.items():
            self._inputs[name][0].copy_(torch.from_numpy(np.ascontiguousarray(value)))
        with torch.cuda.stream(self._stream):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._enqueue()
        self._stream.synchronize()
        return {name: host.numpy().copy() for name, (host, _) in self._outputs.items()}


# TensorRT DataType names -> torch dtypes (torch passed in: it is imported lazily).
_TORCH_DTYPES: dict[str, Callable] = {
    "DataType.FLOAT": lambda t: t.float32,
    "DataType.HALF": lambda t: t.float16,
    "DataType.INT32": lambda t: t.int32,
    "DataType.INT64": lambda t: t.int64,
    "DataType.BOOL": lambda t: t.bool,
}


@dataclass
class Candidate:
    """One runtime the chain may use: a name, and how to load it."""

    name: str
    load: Callable[[], Backend]


class FallbackBackend(Backend):
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
        self._current: Backend | None = None
        with self._lock:
            self._load_next()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._current.name if self._current is not None else "none"

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
        raise BackendError(f"no runtime could load model {self.model!r}: {'; '.join(self.failures) or 'none available'}")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._with_fallback(lambda backend: backend.run(inputs))

    def run_tensor(self, inputs):
        return self._with_fallback(lambda backend: run_tensors(backend, inputs))

    def _with_fallback(self, call):
        while True:
            backend = self._current
            if backend is None:
                raise BackendError(f"model {self.model!r} has no working runtime left: {'; '.join(self.failures)}")
            try:
                return call(backend)
            except Exception as exc:
                with self._lock:
                    if self._current is backend:  # another thread may have moved on already
                        log.error("model %s: %s failed at run time (%s); falling back", self.model, backend.name, exc)
                        self._drop(backend.name, f"run: {exc}")
                        self._load_next()


def run_tensors(backend: Backend, inputs):
    """Run `backend` on torch tensors (the device pipeline's frames): through its own device path
    when it has one, so the data never leaves the GPU, else through host memory."""
    own = getattr(backend, "run_tensor", None)
    return own(inputs) if own is not None else _through_host(backend, inputs)


def _through_host(backend: Backend, inputs):
    import torch

    device = next(iter(inputs.values())).device
    outputs = backend.run({k: v.contiguous().cpu().numpy() for k, v in inputs.items()})
    return {k: torch.from_numpy(v).to(device) for k, v in outputs.items()}


def available_onnx_providers() -> list[str]:
    import onnxruntime as ort

    installed = set(ort.get_available_providers())
    return [p for p in ONNX_PROVIDER_PREFERENCE if p in installed]


def tensorrt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def candidates_for(model_path: Path, threads: int = 1, engine: Path | None = None) -> list[Candidate]:
    """The chain for one ONNX model on this machine, most preferred first. `engine`: a built
    TensorRT plan for it (from the cache), if there is one."""
    chain = []
    if engine is not None and engine.is_file() and tensorrt_available():
        chain.append(Candidate("tensorrt", lambda: TensorRTBackend(engine)))
    for provider in available_onnx_providers():
        chain.append(
            Candidate(f"onnxruntime:{provider}", lambda p=provider: OnnxRuntimeBackend(model_path, p, threads=threads))
        )
    return chain


def load_backend(
    model_name: str,
    model_path: Path,
    threads: int = 1,
    engine: Path | None = None,
    on_fallback: Callable[[str, str, str], None] = lambda model, failed, reason: None,
) -> FallbackBackend:
    """The chain for `model_path`, loaded: the most preferred runtime that loads serves."""
    return FallbackBackend(model_name, candidates_for(model_path, threads, engine), on_fallback)
