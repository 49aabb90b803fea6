"""Where TensorRT engines live, and the key that says when one can be reused.

A serialized TensorRT engine is only valid for the exact network, input shapes, batch range,
precision, TensorRT version and GPU it was built for; loading one built for anything else fails
or, worse, runs wrong. So the file name holds a digest of all of them (the resolution included:
an engine built at 512x512 cannot serve 768x768).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


# Sessions one engine serves in one call (its optimization profile covers batch 1..this).
# `camfx export engines` builds with it and `camfx serve` looks engines up with it.
DEFAULT_MAX_BATCH = 4


@dataclass(frozen=True)
class EngineKey:
    model: str  # registry name or model id, e.g. "landscape", "stabilityai/sd-turbo:unet"
    weights_sha256: str  # of the exported ONNX file (weights and graph) the engine comes from
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # per input at batch 1
    max_batch: int  # the optimization profile covers batch 1..max_batch
    precision: str  # "fp16" or "fp32"
    tensorrt: str  # TensorRT version
    gpu: str  # device name, e.g. "NVIDIA H100 80GB HBM3"

    @classmethod
    def of(cls, model: str, weights_sha256: str, inputs: dict, max_batch: int, precision: str,
           tensorrt: str, gpu: str) -> "EngineKey":
        """The key with `inputs` ({name: shape at batch 1}) in the one order every caller uses."""
        shapes = tuple(sorted((name, tuple(shape)) for name, shape in inputs.items()))
        return cls(model, weights_sha256, shapes, max_batch, precision, tensorrt, gpu)

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def filename(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return f"{safe}-{self.digest()[:20]}.plan"


def cache_dir() -> Path:
    """$CAMFX_CACHE/engines, else $XDG_CACHE_HOME/camfx/engines, else ~/.cache/camfx/engines."""
    root = os.environ.get("CAMFX_CACHE")
    if root:
        return Path(root) / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "camfx" / "engines"


def engine_path(key: EngineKey, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / key.filename()


def timing_cache_path(directory: Path | None = None) -> Path:
    """One timing cache per GPU model and TensorRT version would be ideal; TensorRT checks its
    own compatibility and ignores a stale cache, so one file is shared."""
    return (directory or cache_dir()) / "timing.cache"


def runtime_facts() -> tuple[str, str] | None:
    """(TensorRT version, GPU name) when both are there, else None. Imports tensorrt and torch:
    call it once per model load, not per frame."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return None
    import tensorrt
    import torch

    if not torch.cuda.is_available():
        return None
    return tensorrt.__version__, torch.cuda.get_device_name()


def segmentation_key(name: str, max_batch: int, precision: str, tensorrt: str, gpu: str) -> EngineKey:
    """The key of a bundled segmentation model's engine (its shapes and hash from the registry)."""
    from camfx.models.registry import INPUT_NAME, SEGMENTATION_MODELS

    spec = SEGMENTATION_MODELS[name]
    inputs = {INPUT_NAME: (1, spec.input_height, spec.input_width, 3)}
    return EngineKey.of(name, spec.sha256, inputs, max_batch, precision, tensorrt, gpu)


def cached_segmentation_engine(
    name: str, max_batch: int = DEFAULT_MAX_BATCH, precision: str = "fp16"
) -> Path | None:
    """The built engine for a bundled segmentation model on this machine, if there is one."""
    facts = runtime_facts()
    if facts is None:
        return None
    path = engine_path(segmentation_key(name, max_batch, precision, *facts))
    return path if path.is_file() else None
