"""One interface over inference runtimes, and the chain that falls back between them.

A `Backend` runs one model: a dict of named host arrays in, a dict of named host arrays out.
Runtimes, most preferred first (only those this machine has are tried):

    tensorrt           native TensorRT: a cached engine (see `camfx export engines`),
                       execute_async_v3 on device buffers, replayed as a CUDA graph
    onnxruntime:TensorrtExecutionProvider   fp16, engine and timing caches on disk
    onnxruntime:CUDAExecutionProvider       IO binding, outputs on the device until copied
    torch:cuda         our ONNX file run by torch ops (engine/onnx_torch.py), fp16, one CUDA
                       graph per input shape: the GPU path where onnxruntime has no GPU provider
    onnxruntime:CPUExecutionProvider        the path every machine has

`FallbackBackend` holds the chain for one model: the first that loads serves; one that fails at
load or at run time is dropped, visibly (a log line, a metric, its name in /healthz and in the
session stats), and the same input is run again on the next, so a stream never freezes or goes
black because a GPU runtime broke.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .engine_cache import DEFAULT_MAX_BATCH, cache_dir

log = logging.getLogger("camfx.backend")

# Most to least preferred; only those that onnxruntime reports as available are tried.
ONNX_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(RuntimeError):
    """No runtime could load or run a model."""


class Backend(ABC):
    name: str
    max_batch: int = 1  # the most inputs one run may stack on axis 0


    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeBackend(Backend):
    """onnxruntime with one execution provider. On a GPU provider the run goes through IO binding:
    inputs are copied to the device once, outputs stay there until copied back in one go.

    `batch`: give the model a symbolic batch dimension at load (needs the onnx package), so one
    run can carry several sessions' frames; `max_batch` says what a run accepts.
    """

    def __init__(
        self, model_path: Path, provider: str, threads: int = 1, cache: Path | None = None,
        io_binding: bool | None = None, batch: bool = False,
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
            _symbolic_batch_bytes(model_path) if batch else str(model_path),
            options,
            providers=[(provider, provider_options(provider, cache or cache_dir()))],
        )
        first_dims = [i.shape[0] if i.shape else 1 for i in self._session.get_inputs()]
        self.max_batch = DEFAULT_MAX_BATCH if not all(isinstance(d, int) for d in first_dims) else min(first_dims)
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
        inputs = {name: tensor.contiguous() for name, tensor in inputs.items()}  # alive until the run ends
        for name, tensor in inputs.items():
            dtype = np.dtype(str(tensor.dtype).removeprefix("torch."))
            binding.bind_input(name, "cuda", tensor.device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())
        outputs = {}
        first = next(iter(inputs.values()))
        device, batch = first.device, first.shape[0]
        for out in self._session.get_outputs():
            shape = [d if isinstance(d, int) else batch for d in out.shape]  # the batch is the only free dim
            dtype = _ORT_TYPES[out.type]
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            binding.bind_output(out.name, "cuda", device.index or 0, np.dtype(dtype), shape, tensor.data_ptr())
            outputs[out.name] = tensor
        self._session.run_with_iobinding(binding)
        return outputs


# onnxruntime's type strings -> dtype names numpy and torch share.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32"}


def _symbolic_batch_bytes(model_path: Path) -> bytes:
    import onnx

    from camfx.export.tensorrt import symbolic_batch

    model, _ = symbolic_batch(onnx.load(str(model_path)), str(model_path))
    return model.SerializeToString()


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
    """A serialized TensorRT engine run with execute_async_v3 on device buffers allocated once, at
    the profile's largest batch (torch's CUDA allocator), pinned host staging buffers, its own
    CUDA stream, and per batch size the whole copy-in / execute / copy-out sequence captured once
    as a CUDA graph and replayed after. A run of batch b uses the first b rows of every buffer.
    """

    name = "tensorrt"

    def __init__(self, plan_path: Path):
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
        self._lock = threading.Lock()  # one context and one set of buffers, shared by every session
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # The largest batch the optimization profile allows (1 for an engine with static shapes).
        self.max_batch = min(self._engine.get_tensor_profile_shape(n, 0)[2][0] for n in input_names)
        for name in input_names:
            self._context.set_input_shape(name, self._shape(name, self.max_batch))
        self._inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (pinned host, device)
        self._outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in names:
            shape = list(self._context.get_tensor_shape(name))  # at max_batch, outputs resolved
            dtype = _TORCH_DTYPES[str(self._engine.get_tensor_dtype(name))](torch)
            pair = (torch.empty(shape, dtype=dtype, pin_memory=True), torch.empty(shape, dtype=dtype, device="cuda"))
            (self._inputs if name in input_names else self._outputs)[name] = pair
            self._context.set_tensor_address(name, pair[1].data_ptr())
        self._graphs: dict[int, object] = {}  # batch -> captured CUDA graph
        self._batch = 0

    def _shape(self, name: str, batch: int) -> list[int]:
        return [batch, *(int(d) for d in self._engine.get_tensor_shape(name)[1:])]

    def _set_batch(self, batch: int) -> None:
        if not 1 <= batch <= self.max_batch:
            raise BackendError(f"batch {batch} is outside the engine's profile (1..{self.max_batch})")
        if batch != self._batch:
            for name in self._inputs:
                self._context.set_input_shape(name, self._shape(name, batch))
            self._batch = batch

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed")

    def _enqueue(self, batch: int) -> None:
        for host, device in self._inputs.values():
            device[:batch].copy_(host[:batch], non_blocking=True)
        self._execute()
        for host, device in self._outputs.values():
            host[:batch].copy_(device[:batch], non_blocking=True)

    def _host_round_trip(self, batch: int) -> None:
        torch = self._torch
        with torch.cuda.stream(self._stream):
            if batch in self._graphs:
                self._graphs[batch].replay()
            else:
                self._enqueue(batch)  # one plain run first: TensorRT allocates lazily
                self._stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    self._enqueue(batch)
                self._graphs[batch] = graph
        self._stream.synchronize()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch = len(next(iter(inputs.values())))
        with self._lock:
            self._set_batch(batch)
            for name, value in inputs.items():
                self._inputs[name][0][:batch].copy_(torch.from_numpy(np.ascontiguousarray(value)))
            self._host_round_trip(batch)
            return {name: host[:batch].numpy().copy() for name, (host, _) in self._outputs.items()}

    def run_tensor(self, inputs):
        """Device tensors in and out: device-to-device copies around one execute_async_v3."""
        torch = self._torch
        batch = next(iter(inputs.values())).shape[0]
        with self._lock:
            self._set_batch(batch)
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                for name, tensor in inputs.items():
                    self._inputs[name][1][:batch].copy_(tensor, non_blocking=True)
                self._execute()
                outputs = {name: device[:batch].clone() for name, (_, device) in self._outputs.items()}
            torch.cuda.current_stream().wait_stream(self._stream)
            return outputs


# TensorRT DataType names -> torch dtypes (torch passed in: it is imported lazily).
_TORCH_DTYPES: dict[str, Callable] = {
    "DataType.FLOAT": lambda t: t.float32,
    "DataType.HALF": lambda t: t.float16,
    "DataType.INT32": lambda t: t.int32,
    "DataType.INT64": lambda t: t.int64,
    "DataType.BOOL": lambda t: t.bool,
}


class TorchBackend(Backend):
    """Our ONNX file executed by torch (see engine/onnx_torch.py) on `device`.

    On CUDA: fp16 weights and activations, and one CUDA graph per input shape, captured on first
    use and replayed after (the model is ~150 small kernels: launching them one by one would cost
    more than running them). Any batch up to `max_batch`.
    """

    max_batch = DEFAULT_MAX_BATCH

    def __init__(self, model_path: Path, device: str = "cuda"):
        import torch

        from .onnx_torch import OnnxTorchModule

        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch sees no CUDA GPU")
        self._dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._module = OnnxTorchModule.load(model_path).to(self.device, self._dtype)
        self._graphs: dict[tuple, tuple] = {}  # input shapes -> (graph, static inputs, static outputs)
        self._cuda_graph = self.device.type == "cuda"
        self._lock = threading.Lock()  # the graphs' static buffers are shared by every caller
        self.name = f"torch:{self.device.type}"

    def run_tensor(self, inputs):
        torch = self._torch
        with torch.inference_mode():
            feeds = {k: v.to(self.device, self._dtype) for k, v in inputs.items()}
            if not self._cuda_graph:
                outputs = self._module(**feeds)
            else:
                with self._lock:
                    outputs = self._replay(feeds)
            return {k: v.float() for k, v in outputs.items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        outputs = self.run_tensor({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()})
        return {k: v.cpu().numpy() for k, v in outputs.items()}

    def _replay(self, feeds):
        torch = self._torch
        key = tuple((k, tuple(v.shape)) for k, v in sorted(feeds.items()))
        if key not in self._graphs:
            static_in = {k: v.clone() for k, v in feeds.items()}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its algorithms
                for _ in range(2):
                    self._module(**static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._module(**static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        for k, v in feeds.items():
            static_in[k].copy_(v)
        graph.replay()
        return {k: v.clone() for k, v in static_out.items()}


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
        raise BackendError(f"no runtime could load model {self.model!r}: {'; '.join(self.failures) or 'none available'}")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._with_fallback(lambda backend: in_chunks(backend.run, inputs, backend.max_batch, np.concatenate))

    def run_tensor(self, inputs):
        import torch

        return self._with_fallback(
            lambda backend: in_chunks(lambda part: run_tensors(backend, part), inputs, backend.max_batch, torch.cat)
        )

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


def in_chunks(run: Callable[[dict], dict], inputs: dict, limit: int, join: Callable) -> dict:
    """`run(inputs)`, split along the batch axis into runs of at most `limit` (a batch taken for
    one runtime may land, after a fallback, on one that takes less), outputs joined by `join`."""
    count = len(next(iter(inputs.values())))
    if count <= limit:
        return run(inputs)
    parts = [run({k: v[i : i + limit] for k, v in inputs.items()}) for i in range(0, count, limit)]
    return {k: join([part[k] for part in parts]) for k in parts[0]}


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
    return importlib.util.find_spec("tensorrt") is not None


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is on this machine (checked without importing torch)."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def torch_cuda_possible() -> bool:
    """torch and onnx are installed and there is an NVIDIA GPU: worth trying the torch runtime."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx")) and nvidia_gpu_present()


def candidates_for(
    model_path: Path, threads: int = 1, engine: Path | None = None, batch: bool = False
) -> list[Candidate]:
    """The chain for one ONNX model on this machine, most preferred first. `engine`: a built
    TensorRT plan for it (from the cache), if there is one. `batch`: runtimes should accept
    several frames per run (onnxruntime then needs the onnx package to free the batch axis)."""
    chain = []
    if engine is not None and engine.is_file() and tensorrt_available():
        chain.append(Candidate("tensorrt", lambda: TensorRTBackend(engine)))
    batch = batch and importlib.util.find_spec("onnx") is not None
    for provider in available_onnx_providers():
        if provider == "CPUExecutionProvider" and torch_cuda_possible():
            chain.append(Candidate("torch:cuda", lambda: TorchBackend(model_path, "cuda")))
        chain.append(
            Candidate(
                f"onnxruntime:{provider}",
                lambda p=provider: OnnxRuntimeBackend(model_path, p, threads=threads, batch=batch),
            )
        )
    return chain


def load_backend(
    model_name: str,
    model_path: Path,
    threads: int = 1,
    engine: Path | None = None,
    on_fallback: Callable[[str, str, str], None] = lambda model, failed, reason: None,
    batch: bool = False,
) -> FallbackBackend:
    """The chain for `model_path`, loaded: the most preferred runtime that loads serves."""
    return FallbackBackend(model_name, candidates_for(model_path, threads, engine, batch), on_fallback)
