"""The diffusion stylizer's UNet and TAESD on the engine's runtime chain, with torch as the floor.

`accelerate_parts` takes loaded `DiffusionParts` and, where `camfx export engines --diffusion`
has exported those very weights, swaps the UNet and the TAESD VAE for adapters that look to
`StreamStylizer` exactly like the diffusers modules (same call signatures, same output objects,
`.config` / `.dtype` / `.device` passed through) but run each call on the first runtime of:

    tensorrt                   a cached engine for that part and resolution (tensorrt importable,
                               built for this TensorRT and GPU; see `camfx export engines`)
    onnxruntime:<provider>     the prepared ONNX file (symbolic batch 1..max_batch): GPU providers
                               for CUDA parts, the CPU provider for CPU parts
    torch                      the original diffusers module

through a `FallbackBackend` per part and resolution: a runtime that fails at load or at run time
is dropped with a log line and its reason kept (`runtime_info`), and the same call goes to the
next, so a broken GPU runtime never stops a stream. Resolutions are looked up as they are first
seen (the stream's size changes live); one with no exported file runs on torch, as does a call
the exported shapes cannot take (another prompt length, a batch over max_batch).

Exported files are found by a fingerprint of the weights, not by a name: serve uses them only
when they were made from the same weights it loaded (a re-downloaded model, another TAESD or a
fused LoRA gives another fingerprint, so stale files are never used), and a model served under
any name finds them. Layout, under the engine cache (`camfx.engine.engine_cache.cache_dir()`):

    onnx/diffusion/{part}-{fingerprint}_{H}x{W}.onnx       as exported (the engine key's hash)
    onnx/diffusion/{part}-{fingerprint}_{H}x{W}.trt.onnx   prepared: symbolic batch dimension
    onnx/diffusion/{part}-{fingerprint}_{H}x{W}.json       the record: shapes, dtypes, hashes,
                                                           written last (its presence = complete)

part is `unet`, `taesd_encoder` or `taesd_decoder`; H x W is the picture size (latents are /8).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backends import (
    Backend,
    Candidate,
    FallbackBackend,
    OnnxRuntimeBackend,
    available_onnx_providers,
    run_tensors,
    tensorrt_available,
)
from .engine_cache import EngineKey, cache_dir, engine_path, runtime_facts

log = logging.getLogger("camfx.diffusion")

RECORD_FORMAT = 1
PARTS = ("unet", "taesd_encoder", "taesd_decoder")
TORCH = "torch"

# Builds the chain for one exported part at one size (a hook for tests and experiments):
# (record, torch candidate) -> candidates, most preferred first.
ChainFactory = Callable[["ExportRecord", Candidate], list[Candidate]]
OnFallback = Callable[[str, str, str], None]


# -- where exported files live ---------------------------------------------------------------------


def export_dir(cache: Path | None = None) -> Path:
    """The folder of exported diffusion parts inside the engine cache."""
    return (cache or cache_dir()) / "onnx" / "diffusion"


def fingerprint(module: torch.nn.Module) -> str:
    """A short digest of a module's config and weights, the same on any device and dtype.

    Every tensor of the state dict contributes its name, shape and a strided sample of its values
    rounded to fp16 (so fp32 weights on a CPU and the same weights in fp16 on a GPU agree, and a
    fine-tune or fused LoRA, which moves every element of the layers it touches, does not).
    Costs milliseconds even for the full-size UNet."""
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

    name: str  # the engine's model name, e.g. "random/sd-turbo:unet_512x512"
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
    precision: str  # of the TensorRT engine built from it: "fp16" or "fp32"
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

    def engine_key(self, tensorrt_version: str, gpu: str) -> EngineKey:
        """The key `camfx export engines` built this part's engine under (see export.tensorrt.engine_key)."""
        return EngineKey.of(
            self.name, self.source_sha256, self.inputs, self.max_batch, self.precision, tensorrt_version, gpu
        )

    def accepts(self, inputs: dict[str, torch.Tensor]) -> bool:
        """Whether the exported graph takes these inputs: same names and per-item shapes, a batch
        in 1..max_batch."""
        if set(inputs) != set(self.inputs):
            return False
        batches = {t.shape[0] if t.dim() else 0 for t in inputs.values()}
        if len(batches) != 1 or not 1 <= batches.pop() <= self.max_batch:
            return False
        return all(tuple(inputs[k].shape[1:]) == tuple(shape[1:]) for k, shape in self.inputs.items())


# -- runtimes -------------------------------------------------------------------------------------


class _TorchPart(Backend):
    """The original diffusers module as the chain's last runtime."""

    name = TORCH

    def __init__(self, call: Callable[[dict[str, torch.Tensor]], torch.Tensor], output: str):
        self._call, self._output = call, output

    def run_tensor(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {self._output: self._call(inputs)}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._call({k: torch.from_numpy(v) for k, v in inputs.items()})
        return {self._output: out.cpu().numpy()}


def default_chain(
    record: ExportRecord,
    directory: Path,
    device: torch.device,
    torch_candidate: Candidate,
    facts: tuple[str, str] | None,
    threads: int = 1,
    cache: Path | None = None,
) -> list[Candidate]:
    """TensorRT engine (if built for this machine), onnxruntime providers for `device`, torch."""
    chain = []
    if facts is not None and device.type == "cuda" and tensorrt_available():
        engine = engine_path(record.engine_key(*facts), cache)
        if engine.is_file():
            from .backends import TensorRTBackend

            chain.append(Candidate("tensorrt", lambda: TensorRTBackend(engine)))
    onnx = directory / record.onnx
    for provider in available_onnx_providers():
        # Never onnxruntime on the CPU for a model torch runs on a GPU: far slower than torch.
        if (provider == "CPUExecutionProvider") != (device.type == "cpu"):
            continue
        chain.append(Candidate(
            f"onnxruntime:{provider}",
            lambda p=provider: OnnxRuntimeBackend(onnx, p, threads=threads, cache=cache),
        ))
    chain.append(torch_candidate)
    return chain


class PartRuntime:
    """One exported network (UNet, TAESD encoder or decoder) at every size it is called at."""

    def __init__(
        self,
        model: str,
        part: str,
        fingerprint: str,
        output: str,
        torch_call: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        directory: Path,
        chain: Callable[[ExportRecord, Candidate], list[Candidate]],
        on_fallback: OnFallback,
    ):
        self.model, self.part, self.fingerprint, self.output = model, part, fingerprint, output
        self._torch_call, self._directory = torch_call, directory
        self._chain, self._on_fallback = chain, on_fallback
        self._lock = threading.Lock()
        # (height, width) -> (record, chain) or None (torch); filled as sizes are first seen
        self._sizes: dict[tuple[int, int], tuple[ExportRecord, FallbackBackend] | None] = {}
        self._used: dict[str, str] = {}  # "HxW" -> runtime that served the last call at that size
        self.last: str | None = None  # runtime that served the last call

    def exported_sizes(self) -> list[str]:
        prefix = f"{self.part}-{self.fingerprint}_"
        return sorted(p.stem.removeprefix(prefix) for p in self._directory.glob(f"{prefix}*.json"))

    def _entry(self, size: tuple[int, int]):
        entry = self._sizes.get(size, False)
        if entry is not False:
            return entry
        with self._lock:
            if size in self._sizes:
                return self._sizes[size]
            record = ExportRecord.find(self._directory, self.part, self.fingerprint, *size)
            entry = None
            if record is not None:
                label = f"{self.model}:{self.part}_{size[0]}x{size[1]}"
                torch_candidate = Candidate(TORCH, lambda: _TorchPart(self._torch_call, record.output))
                entry = (record, FallbackBackend(label, self._chain(record, torch_candidate), self._on_fallback))
            self._sizes[size] = entry
            return entry

    def __call__(self, inputs: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Run at picture size `size`; the output comes back in the first input's dtype and device."""
        entry = self._entry(size)
        tag = f"{size[0]}x{size[1]}"
        # Once the chain is down to torch it is called directly: an error of torch's own (out of
        # memory) then fails this call only, as it did before there was a chain, instead of
        # dropping the last runtime for good.
        if entry is None or entry[1].name in (TORCH, "none") or not entry[0].accepts(inputs):
            self._used[tag] = self.last = TORCH
            return self._torch_call(inputs)
        record, chain = entry
        first = next(iter(inputs.values()))
        feed = {k: v.to(getattr(torch, record.input_dtypes[k])).contiguous() for k, v in inputs.items()}
        out = run_tensors(chain, feed)[record.output]
        self._used[tag] = self.last = chain.name
        return out.to(first.device, first.dtype)

    def info(self) -> dict[str, Any]:
        """Plain data for /healthz: exported sizes, the runtime per size used so far, fallbacks."""
        fallbacks = []
        for size, entry in list(self._sizes.items()):
            if entry is not None:
                fallbacks += [f"{size[0]}x{size[1]} {failure}" for failure in entry[1].failures]
        return {
            "fingerprint": self.fingerprint,
            "exported": self.exported_sizes(),
            "runtimes": dict(self._used),
            "fallbacks": fallbacks,
        }


# -- the adapters StreamStylizer sees --------------------------------------------------------------


class _Delegate:
    """Passes every attribute it does not define to the wrapped module (config, dtype, device...)."""

    def __init__(self, module: torch.nn.Module):
        object.__setattr__(self, "module", module)

    def __getattr__(self, name: str):
        return getattr(object.__getattribute__(self, "module"), name)


class UNetRuntime(_Delegate):
    """A UNet2DConditionModel's `__call__` (sample, timestep, encoder_hidden_states) on the chain."""

    def __init__(self, module: torch.nn.Module, runtime: PartRuntime):
        super().__init__(module)
        object.__setattr__(self, "runtime", runtime)

    def __call__(self, sample, timestep, encoder_hidden_states=None, return_dict: bool = True, **kwargs):
        if encoder_hidden_states is None or any(v is not None for v in kwargs.values()):
            return self.module(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                               return_dict=return_dict, **kwargs)  # conditioning only torch knows
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0]) if t.numel() == 1 else t
        size = (sample.shape[2] * 8, sample.shape[3] * 8)
        noise = self.runtime({"sample": sample, "timestep": t, "encoder_hidden_states": encoder_hidden_states}, size)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=noise)
        return (noise,)


class TAESDRuntime(_Delegate):
    """An AutoencoderTiny's `encode` / `decode` on the chain (one `PartRuntime` each)."""

    def __init__(self, module: torch.nn.Module, encoder: PartRuntime, decoder: PartRuntime):
        super().__init__(module)
        object.__setattr__(self, "encoder_runtime", encoder)
        object.__setattr__(self, "decoder_runtime", decoder)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        latents = self.encoder_runtime({"image": x}, (x.shape[2], x.shape[3]))
        if return_dict:
            from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput

            return AutoencoderTinyOutput(latents=latents)
        return (latents,)

    def decode(self, x: torch.Tensor, generator=None, return_dict: bool = True):
        image = self.decoder_runtime({"latent": x}, (x.shape[2] * 8, x.shape[3] * 8))
        if return_dict:
            from diffusers.models.autoencoders.vae import DecoderOutput

            return DecoderOutput(sample=image)
        return (image,)


def _unet_torch(unet: torch.nn.Module, dtype: torch.dtype):
    def call(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return unet(
            inputs["sample"].to(dtype), inputs["timestep"],
            encoder_hidden_states=inputs["encoder_hidden_states"].to(dtype), return_dict=False,
        )[0]
    return call


def _taesd_torch(vae: torch.nn.Module, dtype: torch.dtype, which: str):
    if which == "encode":
        return lambda inputs: vae.encode(inputs["image"].to(dtype), return_dict=False)[0]
    return lambda inputs: vae.decode(inputs["latent"].to(dtype), return_dict=False)[0]


def accelerate_parts(
    parts,
    model: str,
    cache: Path | None = None,
    *,
    on_fallback: OnFallback = lambda model, failed, reason: None,
    chain: ChainFactory | None = None,
):
    """`parts` (camfx.models.diffusion.DiffusionParts) with the UNet and TAESD on the runtime
    chain where exported files of these weights exist under `cache` (default: the engine cache);
    `parts` itself, unchanged, where none do. `model`: the name in logs and /healthz. `chain`:
    (record, torch candidate) -> candidates, instead of `default_chain`."""
    if already_accelerated(parts):
        return parts
    directory = export_dir(cache)
    unet, vae = parts.unet, parts.vae
    if hasattr(unet, "_orig_mod"):
        log.info("diffusion model %s: unet: torch (torch.compile'd; exported files not used)", model)
        return parts
    facts = runtime_facts() if parts.device.type == "cuda" else None
    threads = torch.get_num_threads()

    def make_chain(record: ExportRecord, torch_candidate: Candidate) -> list[Candidate]:
        if chain is not None:
            return chain(record, torch_candidate)
        return default_chain(record, directory, parts.device, torch_candidate, facts, threads, cache)

    unet_fp, vae_fp = fingerprint(unet), fingerprint(vae)
    runtimes = {
        "unet": PartRuntime(model, "unet", unet_fp, "noise", _unet_torch(unet, parts.dtype),
                            directory, make_chain, on_fallback),
        "taesd_encoder": PartRuntime(model, "taesd_encoder", vae_fp, "latent", _taesd_torch(vae, parts.dtype, "encode"),
                                     directory, make_chain, on_fallback),
        "taesd_decoder": PartRuntime(model, "taesd_decoder", vae_fp, "image", _taesd_torch(vae, parts.dtype, "decode"),
                                     directory, make_chain, on_fallback),
    }
    exported = {part: r.exported_sizes() for part, r in runtimes.items()}
    for part, sizes in exported.items():
        record = next(filter(None, (ExportRecord.find(directory, part, runtimes[part].fingerprint,
                                                      *map(int, size.split("x"))) for size in sizes)), None)
        if record is None:
            log.info("diffusion model %s: %s: torch (nothing exported for these weights in %s)", model, part, directory)
            continue
        planned = " -> ".join(c.name for c in make_chain(record, Candidate(TORCH, lambda: None)))
        log.info("diffusion model %s: %s: %s at %s (exported); torch at other sizes",
                 model, part, planned, ", ".join(sizes))
    new_unet = UNetRuntime(unet, runtimes["unet"]) if exported["unet"] else unet
    new_vae = (TAESDRuntime(vae, runtimes["taesd_encoder"], runtimes["taesd_decoder"])
               if exported["taesd_encoder"] or exported["taesd_decoder"] else vae)
    if new_unet is unet and new_vae is vae:
        return parts
    return dataclasses.replace(parts, unet=new_unet, vae=new_vae)


def already_accelerated(parts) -> bool:
    return isinstance(parts.unet, UNetRuntime) or isinstance(parts.vae, TAESDRuntime)


def runtime_info(parts) -> dict[str, Any]:
    """Per part: the runtime serving it ("torch" where nothing is exported), the exported sizes,
    the runtime per size used so far, and the fallbacks so far. Plain data, for /healthz."""
    info: dict[str, Any] = {}
    unet, vae = parts.unet, parts.vae
    runtimes = {
        "unet": unet.runtime if isinstance(unet, UNetRuntime) else None,
        "taesd_encoder": vae.encoder_runtime if isinstance(vae, TAESDRuntime) else None,
        "taesd_decoder": vae.decoder_runtime if isinstance(vae, TAESDRuntime) else None,
    }
    for part, runtime in runtimes.items():
        if runtime is None:
            info[part] = {"runtime": TORCH, "exported": [], "runtimes": {}, "fallbacks": []}
        else:
            data = runtime.info()
            info[part] = {"runtime": runtime.last, **data}  # None until its first call
    return info
