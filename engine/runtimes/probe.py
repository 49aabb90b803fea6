"""What this machine has: GPUs, onnxruntime providers, TensorRT, torch, the optional extras.

The one place that checks optional dependencies; it looks (find_spec) without importing, so a
base install never pays for torch.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

# Most to least preferred; only those that onnxruntime reports as available are tried.
ONNX_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_onnx_providers() -> list[str]:
    import onnxruntime as ort

    installed = set(ort.get_available_providers())
    return [p for p in ONNX_PROVIDER_PREFERENCE if p in installed]


def module_available(name: str) -> bool:
    """`name` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install, or one blocked on purpose
        return False


def tensorrt_available() -> bool:
    return module_available("tensorrt")


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is on this machine (checked without importing torch)."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def torch_cuda_possible() -> bool:
    """torch and onnx are installed and there is an NVIDIA GPU: worth trying the torch runtime."""
    return all(module_available(m) for m in ("torch", "onnx")) and nvidia_gpu_present()


def tensorrt_facts() -> tuple[str, str] | None:
    """(TensorRT version, GPU name) when both are there, else None. Imports tensorrt and torch:
    call it once per model load, not per frame."""
    if not (module_available("tensorrt") and module_available("torch")):
        return None
    import tensorrt
    import torch

    if not torch.cuda.is_available():
        return None
    return tensorrt.__version__, torch.cuda.get_device_name()


# What each optional extra brings, and the modules that show it is installed.
EXTRAS = {
    "diffusion": ("the diffusion effect", ("torch", "diffusers", "transformers")),
    "gpu": ("the GPU path", ("torch", "onnx")),
    "export": ("model export", ("torch", "onnx")),
    "bench": ("the benchmarks", ("matplotlib", "psutil")),
}


def missing_extra(extra: str) -> str | None:
    """None when `extra` is installed, else what to do about it (one line for a user). Looks,
    does not import: torch would cost seconds and memory before anyone asks for it."""
    what, modules = EXTRAS[extra]
    for module in modules:
        if not module_available(module):
            return f"{what} needs the {extra} extra ({module} is missing): pip install 'camfx[{extra}]'"
    return None


def resolve_device(device: str) -> str:
    """Where frames are processed ("cpu" or "cuda") for a configured "auto", "cpu" or "cuda";
    asking for cuda without a GPU is an error, not a quiet CPU fallback."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    no_gpu_here = not module_available("torch") or not nvidia_gpu_present()
    if device == "cpu" or (device == "auto" and no_gpu_here):  # no torch import for nothing
        return "cpu"
    try:
        import torch
    except ImportError:
        raise ValueError("the GPU path needs torch with CUDA: pip install 'camfx[gpu]'") from None
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device cuda was asked for, but torch sees no CUDA GPU")
    return "cpu"
