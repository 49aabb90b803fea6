"""ONNX -> TensorRT engines (fp16), cached under a key that says when they are valid.

Two steps:

1. `prepare_onnx` rewrites an exported ONNX file for TensorRT: the batch dimension of every input
   and output becomes symbolic (so one engine serves 1..max_batch sessions batched together), the
   rest stays static, and the optimization profile (min / opt / max shape per input) is derived
   from it. Pure ONNX: runs and is tested on any machine, on our real model files.
2. `build_plan` runs TensorRT's builder on the prepared file with that profile, fp16, and a
   shared timing cache, and writes the plan under its `PlanKey`. Needs the `tensorrt` package
   and an NVIDIA GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from camfx.engine.runtimes.cache import PlanKey, plan_path, timing_cache_path
from camfx.engine.runtimes.onnx_batch import symbolic_batch
from camfx.models.registry import sha256_file

log = logging.getLogger("camfx.export")

class TensorRTUnavailable(RuntimeError):
    """The tensorrt package or a CUDA GPU is missing."""


@dataclass
class OnnxPlan:
    """What TensorRT needs to know about a prepared ONNX file."""

    path: Path
    inputs: dict[str, tuple[int, ...]]  # name -> shape at batch 1
    outputs: dict[str, tuple[int, ...]]
    max_batch: int
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


def prepare_onnx(src: Path, dst: Path, max_batch: int = 1, opt_batch: int = 1) -> OnnxPlan:
    """Write `src` to `dst` with a symbolic batch dimension; return its shapes and profile.

    Raises ValueError for a graph TensorRT could not plan statically: an input or output whose
    non-batch dimensions are not all fixed, or a batch dimension that is not 1 or symbolic.
    """
    import onnx

    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
    model, shapes = symbolic_batch(onnx.load(str(src)), str(src))
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    profile = {
        name: ((1, *shape[1:]), (opt_batch, *shape[1:]), (max_batch, *shape[1:]))
        for name, shape in shapes["inputs"].items()
    }
    return OnnxPlan(dst, shapes["inputs"], shapes["outputs"], max_batch, profile)


def plan_key(
    model: str, source: Path, plan: OnnxPlan, precision: str, tensorrt_version: str, gpu: str
) -> PlanKey:
    """`source`: the exported ONNX file `plan` was prepared from (its hash names the weights)."""
    return PlanKey.of(model, sha256_file(source), plan.inputs, plan.max_batch, precision, tensorrt_version, gpu)


def gpu_name() -> str:
    try:
        import torch
    except ImportError as exc:
        raise TensorRTUnavailable("torch with CUDA is needed to find the GPU") from exc
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible")
    return torch.cuda.get_device_name()


def build_plan(
    model: str,
    source: Path,
    plan: OnnxPlan,
    *,
    fp16: bool = True,
    directory: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Build (or find in the cache) the TensorRT engine for `plan`, prepared from `source`;
    returns the plan file."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU)"
        ) from exc
    key = plan_key(model, source, plan, "fp16" if fp16 else "fp32", trt.__version__, gpu_name())
    path = plan_path(key, directory)
    if path.is_file():
        progress(f"{model}: cached engine {path.name}")
        return path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {plan.path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in plan.profile.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    timing = timing_cache_path(directory)
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    progress(f"{model}: building engine (minutes on first run)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {plan.path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(path)  # never leave a half-written engine under a valid name
    timing.write_bytes(bytes(config.get_timing_cache().serialize()))
    progress(f"{model}: wrote {path.name}")
    return path
