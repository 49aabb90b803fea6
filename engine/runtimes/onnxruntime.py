"""onnxruntime with one execution provider (CPU, CUDA or TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runtime, through_host
from .cache import DEFAULT_MAX_BATCH, cache_dir


class OnnxRuntime(Runtime):
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
            return through_host(self, inputs)
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

    from .onnx_batch import symbolic_batch

    model, _ = symbolic_batch(onnx.load(str(model_path)), str(model_path))
    return model.SerializeToString()


def provider_options(provider: str, cache: Path) -> dict[str, str]:
    """Options per execution provider: fp16 and on-disk plan / timing caches for TensorRT."""
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
