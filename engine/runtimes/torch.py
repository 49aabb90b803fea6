"""Our ONNX files run by torch ops on a device (`runtimes.onnx_torch`): the GPU path where
onnxruntime has no GPU provider."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import Runtime, RuntimeFailure
from .cache import DEFAULT_MAX_BATCH


class TorchRuntime(Runtime):
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
            raise RuntimeFailure("torch sees no CUDA GPU")
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
