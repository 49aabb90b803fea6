"""The on-disk contract between `camfx export engines` (which writes) and `camfx serve` (which
reads): where TensorRT plans and exported diffusion parts live, and the keys that say when one
may be reused.

A serialized TensorRT plan is valid only for the exact network, input shapes, batch range,
precision, TensorRT version and GPU it was built for; loading one built for anything else fails
or, worse, runs wrong. So its file name holds a digest of all of them (the resolution included:
a plan built at 512x512 cannot serve 768x768).

Exported diffusion parts are found by a fingerprint of the weights, not by a name: serve uses
them only when they were made from the same weights it loaded (a re-downloaded model, another
TAESD or a fused LoRA gives another fingerprint, so stale files are never used). Layout:

    <cache>/{model}-{digest}.plan                                 TensorRT plans
    <cache>/timing.cache                                          TensorRT's timing cache
    <cache>/onnx/diffusion/{part}-{fingerprint}_{H}x{W}.onnx      as exported
    <cache>/onnx/diffusion/{part}-{fingerprint}_{H}x{W}.trt.onnx  prepared: symbolic batch
    <cache>/onnx/diffusion/{part}-{fingerprint}_{H}x{W}.json      the record, written last

part is `unet`, `taesd_encoder` or `taesd_decoder`; H x W is the picture size (latents are /8).
No torch at import: the base install reads this too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("camfx.runtime")

# Sessions one plan serves in one call (its optimization profile covers batch 1..this).
# `camfx export engines` builds with it and `camfx serve` looks plans up with it.
DEFAULT_MAX_BATCH = 4


@dataclass(frozen=True)
class PlanKey:
    model: str  # registry name or model id, e.g. "landscape", "stabilityai/sd-turbo:unet"
    weights_sha256: str  # of the exported ONNX file (weights and graph) the plan comes from
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # per input at batch 1
    max_batch: int  # the optimization profile covers batch 1..max_batch
    precision: str  # "fp16" or "fp32"
    tensorrt: str  # TensorRT version
    gpu: str  # device name, e.g. "NVIDIA H100 80GB HBM3"

    @classmethod
    def of(cls, model: str, weights_sha256: str, inputs: dict, max_batch: int, precision: str,
           tensorrt: str, gpu: str) -> "PlanKey":
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


def plan_path(key: PlanKey, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / key.filename()


def timing_cache_path(directory: Path | None = None) -> Path:
    """One timing cache per GPU model and TensorRT version would be ideal; TensorRT checks its
    own compatibility and ignores a stale cache, so one file is shared."""
    return (directory or cache_dir()) / "timing.cache"


def segmentation_key(name: str, max_batch: int, precision: str, tensorrt: str, gpu: str) -> PlanKey:
    """The key of a bundled segmentation model's plan (its shapes and hash from the registry)."""
    from camfx.models.registry import INPUT_NAME, SEGMENTATION_MODELS

    spec = SEGMENTATION_MODELS[name]
    inputs = {INPUT_NAME: (1, spec.input_height, spec.input_width, 3)}
    return PlanKey.of(name, spec.sha256, inputs, max_batch, precision, tensorrt, gpu)


def cached_segmentation_plan(
    name: str, max_batch: int = DEFAULT_MAX_BATCH, precision: str = "fp16"
) -> Path | None:
    """The built plan for a bundled segmentation model on this machine, if there is one."""
    from .probe import tensorrt_facts

    facts = tensorrt_facts()
    if facts is None:
        return None
    path = plan_path(segmentation_key(name, max_batch, precision, *facts))
    return path if path.is_file() else None


RECORD_FORMAT = 1
PARTS = ("unet", "taesd_encoder", "taesd_decoder")


def export_dir(cache: Path | None = None) -> Path:
    """The folder of exported diffusion parts inside the cache."""
    return (cache or cache_dir()) / "onnx" / "diffusion"


def fingerprint(module) -> str:
    """A short digest of a module's config and weights, the same on any device and dtype.

    Every tensor of the state dict contributes its name, shape and a strided sample of its values
    rounded to fp16 (so fp32 weights on a CPU and the same weights in fp16 on a GPU agree, and a
    fine-tune or fused LoRA, which moves every element of the layers it touches, does not).
    Costs milliseconds even for the full-size UNet."""
    import torch

    module = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(getattr(module, "config", {}) or {}).items() if not str(k).startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 256)][:256]
            if sample.is_floating_point():
                sample = sample.to(torch.float16)
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(sample.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def part_stem(part: str, fingerprint: str, height: int, width: int) -> str:
    return f"{part}-{fingerprint}_{height}x{width}"


@dataclass(frozen=True)
class ExportRecord:
    """What `camfx export engines --diffusion` wrote for one part at one size (the .json file)."""

    name: str  # the model name in plan keys and logs, e.g. "random/sd-turbo:unet_512x512"
    part: str
    fingerprint: str
    height: int
    width: int
    source: str  # file name of the ONNX file as exported, next to the record
    source_sha256: str
    onnx: str  # file name of the prepared ONNX file (symbolic batch)
    inputs: dict[str, tuple[int, ...]]  # name -> shape at batch 1
    input_dtypes: dict[str, str]  # name -> torch dtype name, e.g. "float32"
    output: str
    max_batch: int
    precision: str  # of the TensorRT plan built from it: "fp16" or "fp32"
    format: int = RECORD_FORMAT

    @classmethod
    def path(cls, directory: Path, part: str, fingerprint: str, height: int, width: int) -> Path:
        return directory / f"{part_stem(part, fingerprint, height, width)}.json"

    def write(self, directory: Path) -> Path:
        """Atomically: a record on disk always describes complete files."""
        path = self.path(directory, self.part, self.fingerprint, self.height, self.width)
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def find(cls, directory: Path, part: str, fingerprint: str, height: int, width: int) -> "ExportRecord | None":
        """The record for these weights at this size, or None (no file, or one this version cannot
        read: then torch serves, with a warning)."""
        path = cls.path(directory, part, fingerprint, height, width)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != RECORD_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this camfx reads {RECORD_FORMAT}")
            data["inputs"] = {k: tuple(int(d) for d in v) for k, v in data["inputs"].items()}
            record = cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring %s (%s): export it again with `camfx export engines --diffusion`", path, exc)
            return None
        if not (directory / record.onnx).is_file():
            log.warning("ignoring %s: %s is missing", path, record.onnx)
            return None
        return record

    def plan_key(self, tensorrt_version: str, gpu: str) -> PlanKey:
        """The key `camfx export engines` built this part's plan under (see export.tensorrt.plan_key)."""
        return PlanKey.of(
            self.name, self.source_sha256, self.inputs, self.max_batch, self.precision, tensorrt_version, gpu
        )

    def accepts(self, inputs: dict[str, Any]) -> bool:
        """Whether the exported graph takes these inputs: same names and per-item shapes, a batch
        in 1..max_batch."""
        if set(inputs) != set(self.inputs):
            return False
        batches = {t.shape[0] if t.dim() else 0 for t in inputs.values()}
        if len(batches) != 1 or not 1 <= batches.pop() <= self.max_batch:
            return False
        return all(tuple(inputs[k].shape[1:]) == tuple(shape[1:]) for k, shape in self.inputs.items())
