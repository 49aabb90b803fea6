"""What every inference runtime is: named host arrays in, named host arrays out.

A `Runtime` runs one model. The chain (`runtimes.chain`) picks, per model, the first of these that
loads on this machine, most preferred first:

    tensorrt           native TensorRT: a cached plan (see `camfx export engines`),
                       execute_async_v3 on device buffers, replayed as a CUDA graph
    onnxruntime:TensorrtExecutionProvider   fp16, plan and timing caches on disk
    onnxruntime:CUDAExecutionProvider       IO binding, outputs on the device until copied
    torch:cuda         our ONNX file run by torch ops (runtimes.onnx_torch), fp16, one CUDA
                       graph per input shape: the GPU path where onnxruntime has no GPU provider
    onnxruntime:CPUExecutionProvider        the path every machine has

Runtimes with a device path also have `run_tensor` (torch tensors in and out, on the device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np


class RuntimeFailure(RuntimeError):
    """No runtime could load or run a model."""


class Runtime(ABC):
    name: str
    max_batch: int = 1  # the most inputs one run may stack on axis 0

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def in_chunks(run: Callable[[dict], dict], inputs: dict, limit: int, join: Callable) -> dict:
    """`run(inputs)`, split along the batch axis into runs of at most `limit` (a batch taken for
    one runtime may land, after a fallback, on one that takes less), outputs joined by `join`."""
    count = len(next(iter(inputs.values())))
    if count <= limit:
        return run(inputs)
    parts = [run({k: v[i : i + limit] for k, v in inputs.items()}) for i in range(0, count, limit)]
    return {k: join([part[k] for part in parts]) for k in parts[0]}


def run_tensors(runtime: Runtime, inputs):
    """Run `runtime` on torch tensors (the device pipeline's frames): through its own device path
    when it has one, so the data never leaves the GPU, else through host memory."""
    own = getattr(runtime, "run_tensor", None)
    return own(inputs) if own is not None else through_host(runtime, inputs)


def through_host(runtime: Runtime, inputs):
    """Torch tensors through a runtime that takes host arrays: copied out, run, copied back."""
    import torch

    device = next(iter(inputs.values())).device
    outputs = runtime.run({k: v.contiguous().cpu().numpy() for k, v in inputs.items()})
    return {k: torch.from_numpy(v).to(device) for k, v in outputs.items()}
