"""The diffusion stylizer's networks (UNet, TAESD encoder and decoder) as plain callables, on the
runtime chain where they were exported, with torch as the floor.

`accelerated_networks` takes loaded `DiffusionParts` and, where `camfx export engines --diffusion`
has exported those very weights, runs each call on the first runtime of:

    tensorrt                   a cached plan for that part and resolution (tensorrt importable,
                               built for this TensorRT and GPU; see `camfx export engines`)
    onnxruntime:<provider>     the prepared ONNX file (symbolic batch 1..max_batch): GPU providers
                               for CUDA parts, the CPU provider for CPU parts
    torch                      the original diffusers module

through a `RuntimeChain` per part and resolution: a runtime that fails at load or at run time
is dropped with a log line and its reason kept (`runtime_info`), and the same call goes to the
next, so a broken GPU runtime never stops a stream. Resolutions are looked up as they are first
seen (the stream's size changes live); one with no exported file runs on torch, as does a call
the exported shapes cannot take (another prompt length, a batch over max_batch). Where the files
live and how they are named: camfx.engine.runtimes.cache.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..runtimes.base import Runtime, run_tensors
from ..runtimes.cache import PARTS, ExportRecord, export_dir, fingerprint, plan_path
from ..runtimes.chain import Candidate, RuntimeChain
from ..runtimes.probe import available_onnx_providers, tensorrt_available, tensorrt_facts

log = logging.getLogger("camfx.diffusion")

TORCH = "torch"

# Builds the chain for one exported part at one size (a hook for tests and experiments):
# (record, torch candidate) -> candidates, most preferred first.
ChainFactory = Callable[["ExportRecord", Candidate], list[Candidate]]
OnFallback = Callable[[str, str, str], None]


# -- runtimes -------------------------------------------------------------------------------------


class _TorchPart(Runtime):
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
        engine = plan_path(record.plan_key(*facts), cache)
        if engine.is_file():
            from ..runtimes.tensorrt import TensorRTRuntime

            chain.append(Candidate("tensorrt", lambda: TensorRTRuntime(engine)))
    from ..runtimes.onnxruntime import OnnxRuntime

    onnx = directory / record.onnx
    for provider in available_onnx_providers():
        # Never onnxruntime on the CPU for a model torch runs on a GPU: far slower than torch.
        if (provider == "CPUExecutionProvider") != (device.type == "cpu"):
            continue
        chain.append(Candidate(
            f"onnxruntime:{provider}",
            lambda p=provider: OnnxRuntime(onnx, p, threads=threads, cache=cache),
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
        self._sizes: dict[tuple[int, int], tuple[ExportRecord, RuntimeChain] | None] = {}
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
                entry = (record, RuntimeChain(label, self._chain(record, torch_candidate), self._on_fallback))
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


# -- the three callables the stylizer calls -------------------------------------------------------


@dataclass(frozen=True)
class Networks:
    """What the stylizer runs, as plain callables on torch tensors:

    unet(sample, timesteps, embeddings) -> the model's noise (or v) prediction
    encode(image in [-1, 1]) -> latent, decode(latent) -> image in [-1, 1] (TAESD's own scale)

    `parts`: per network, the `PartRuntime` behind it (None where torch runs it), for /healthz.
    """

    unet: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    parts: dict[str, "PartRuntime | None"] = field(default_factory=lambda: dict.fromkeys(PARTS))


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


def _networks(unet_call, encode_call, decode_call, parts: dict[str, "PartRuntime | None"]) -> Networks:
    """Networks over callables that take the exported graphs' named inputs and a picture size."""

    def unet(sample, timesteps, embeddings):
        t = torch.as_tensor(timesteps, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0]) if t.numel() == 1 else t
        inputs = {"sample": sample, "timestep": t, "encoder_hidden_states": embeddings}
        return unet_call(inputs, (sample.shape[2] * 8, sample.shape[3] * 8))

    def encode(image):
        return encode_call({"image": image}, (image.shape[2], image.shape[3]))

    def decode(latent):
        return decode_call({"latent": latent}, (latent.shape[2] * 8, latent.shape[3] * 8))

    return Networks(unet, encode, decode, parts)


def torch_networks(parts) -> Networks:
    """The diffusers modules of `parts` (camfx.models.diffusion.DiffusionParts) as they are."""
    unet = _unet_torch(parts.unet, parts.dtype)
    encode = _taesd_torch(parts.vae, parts.dtype, "encode")
    decode = _taesd_torch(parts.vae, parts.dtype, "decode")
    return _networks(lambda inputs, size: unet(inputs), lambda inputs, size: encode(inputs),
                     lambda inputs, size: decode(inputs), dict.fromkeys(PARTS))


def accelerated_networks(
    parts,
    model: str,
    cache: Path | None = None,
    *,
    on_fallback: OnFallback = lambda model, failed, reason: None,
    chain: ChainFactory | None = None,
) -> Networks:
    """The networks of `parts`, each on the runtime chain where exported files of these weights
    exist under `cache` (default: the cache), on torch where none do. `model`: the name in logs
    and /healthz. `chain`: (record, torch candidate) -> candidates, instead of `default_chain`."""
    directory = export_dir(cache)
    unet, vae = parts.unet, parts.vae
    if hasattr(unet, "_orig_mod"):
        log.info("diffusion model %s: unet: torch (torch.compile'd; exported files not used)", model)
        return torch_networks(parts)
    facts = tensorrt_facts() if parts.device.type == "cuda" else None
    threads = torch.get_num_threads()

    def make_chain(record: ExportRecord, torch_candidate: Candidate) -> list[Candidate]:
        if chain is not None:
            return chain(record, torch_candidate)
        return default_chain(record, directory, parts.device, torch_candidate, facts, threads, cache)

    unet_fp, vae_fp = fingerprint(unet), fingerprint(vae)
    torch_calls = {"unet": _unet_torch(unet, parts.dtype), "taesd_encoder": _taesd_torch(vae, parts.dtype, "encode"),
                   "taesd_decoder": _taesd_torch(vae, parts.dtype, "decode")}
    outputs = {"unet": "noise", "taesd_encoder": "latent", "taesd_decoder": "image"}
    used: dict[str, PartRuntime | None] = {}
    for part in PARTS:
        runtime = PartRuntime(model, part, unet_fp if part == "unet" else vae_fp, outputs[part], torch_calls[part],
                              directory, make_chain, on_fallback)
        sizes = runtime.exported_sizes()
        record = next(filter(None, (ExportRecord.find(directory, part, runtime.fingerprint, *map(int, size.split("x")))
                                    for size in sizes)), None)
        if record is None:
            log.info("diffusion model %s: %s: torch (nothing exported for these weights in %s)", model, part, directory)
            used[part] = None
            continue
        planned = " -> ".join(c.name for c in make_chain(record, Candidate(TORCH, lambda: None)))
        log.info("diffusion model %s: %s: %s at %s (exported); torch at other sizes",
                 model, part, planned, ", ".join(sizes))
        used[part] = runtime
    if not any(used.values()):
        return torch_networks(parts)
    calls = [used[part] or (lambda inputs, size, call=torch_calls[part]: call(inputs)) for part in PARTS]
    return _networks(*calls, used)


def runtime_info(networks: Networks) -> dict[str, Any]:
    """Per part: the runtime serving it ("torch" where nothing is exported), the exported sizes,
    the runtime per size used so far, and the fallbacks so far. Plain data, for /healthz."""
    info: dict[str, Any] = {}
    for part in PARTS:
        runtime = networks.parts.get(part)
        if runtime is None:
            info[part] = {"runtime": TORCH, "exported": [], "runtimes": {}, "fallbacks": []}
        else:
            info[part] = {"runtime": runtime.last, **runtime.info()}  # None until its first call
    return info
