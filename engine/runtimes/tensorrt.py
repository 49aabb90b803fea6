"""Native TensorRT: a serialized plan run with execute_async_v3 (needs tensorrt, torch, a GPU)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np

from .base import Runtime, RuntimeFailure


class TensorRTRuntime(Runtime):
    """A serialized TensorRT plan run with execute_async_v3 on device buffers allocated once, at
    the profile's largest batch (torch's CUDA allocator), pinned host staging buffers, its own
    CUDA stream, and per batch size the whole copy-in / execute / copy-out sequence captured once
    as a CUDA graph and replayed after. A run of batch b uses the first b rows of every buffer.
    """

    name = "tensorrt"

    def __init__(self, plan_path: Path):
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeFailure("TensorRT needs a CUDA GPU")
        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._trt_engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._trt_engine is None:
            raise RuntimeFailure(f"could not deserialize {plan_path} (built for another GPU or TensorRT?)")
        self._context = self._trt_engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._lock = threading.Lock()  # one context and one set of buffers, shared by every session
        names = [self._trt_engine.get_tensor_name(i) for i in range(self._trt_engine.num_io_tensors)]
        input_names = [n for n in names if self._trt_engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # The largest batch the optimization profile allows (1 for a plan with static shapes).
        self.max_batch = min(self._trt_engine.get_tensor_profile_shape(n, 0)[2][0] for n in input_names)
        for name in input_names:
            self._context.set_input_shape(name, self._shape(name, self.max_batch))
        self._inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (pinned host, device)
        self._outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in names:
            shape = list(self._context.get_tensor_shape(name))  # at max_batch, outputs resolved
            dtype = _TORCH_DTYPES[str(self._trt_engine.get_tensor_dtype(name))](torch)
            pair = (torch.empty(shape, dtype=dtype, pin_memory=True), torch.empty(shape, dtype=dtype, device="cuda"))
            (self._inputs if name in input_names else self._outputs)[name] = pair
            self._context.set_tensor_address(name, pair[1].data_ptr())
        self._graphs: dict[int, object] = {}  # batch -> captured CUDA graph
        self._batch = 0

    def _shape(self, name: str, batch: int) -> list[int]:
        return [batch, *(int(d) for d in self._trt_engine.get_tensor_shape(name)[1:])]

    def _set_batch(self, batch: int) -> None:
        if not 1 <= batch <= self.max_batch:
            raise RuntimeFailure(f"batch {batch} is outside the engine's profile (1..{self.max_batch})")
        if batch != self._batch:
            for name in self._inputs:
                self._context.set_input_shape(name, self._shape(name, batch))
            self._batch = batch

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeFailure("TensorRT execute_async_v3 failed")

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
