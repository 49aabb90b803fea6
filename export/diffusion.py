"""ONNX export of the diffusion stylizer's networks (static shapes but the batch), and a parity check.

One file per network and resolution; every dimension is static but the batch (TensorRT and
onnxruntime plan each shape best, and the stream runs at one resolution at a time). The batch
dimension is exported dynamic ("batch"): traced at batch B, the graph would otherwise bake B into
its reshapes, and stream batch runs the UNet at 1..steps. File names carry the traced batch:

    unet_b{B}_{H}x{W}.onnx          sample [B,4,H/8,W/8], timestep [B], encoder_hidden_states
                                    [B,S,D] -> noise [B,4,H/8,W/8] (all float; S: the text
                                    encoder's length, 77 for CLIP)
    taesd_encoder_b{B}_{H}x{W}.onnx image [B,3,H,W] in [-1,1] -> latent [B,4,H/8,W/8]
    taesd_decoder_b{B}_{H}x{W}.onnx latent [B,4,H/8,W/8] -> image [B,3,H,W] in [-1,1]

Exported with the TorchScript exporter (`dynamo=False`, opset 17): it writes one self-contained
file for small models and needs no onnxscript. The networks are exported in the dtype and on the
device they are in (fp16 on CUDA: the SD 2.1 UNet is 3.5 GB in fp32, over protobuf's 2 GB limit,
1.7 GB in fp16).

`export_for_serve` writes the files `camfx serve` looks for (see camfx.engine.runtimes.cache):
`camfx export engines --diffusion` calls it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .tensorrt import OnnxPlan

OPSET = 17
TOLERANCE = 1e-4  # max |onnxruntime - torch| accepted by check_parity (fp32)


class UNetForExport(nn.Module):
    """The UNet as a plain tensor function (diffusers returns an output object)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class TAESDEncoder(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image, return_dict=False)[0]


class TAESDDecoder(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


def _param(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


def unet_inputs(
    unet: nn.Module, batch: int, height: int, width: int, seq: int = 77
) -> dict[str, torch.Tensor]:
    """Example inputs of the UNet at one shape, seeded, in the UNet's dtype and device. `seq`: the
    prompt embedding's length (77, CLIP's context; the tiny test text encoders use less)."""
    p = _param(unet)
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    return {
        "sample": torch.randn(batch, cfg.in_channels, height // 8, width // 8, generator=g).to(p),
        "timestep": torch.full((batch,), 499.0).to(p),
        "encoder_hidden_states": torch.randn(batch, seq, cfg.cross_attention_dim, generator=g).to(p),
    }


def _export(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path) -> Path:
    """Static shapes but a dynamic batch dimension on every input and the output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools from static shapes
        torch.onnx.export(
            module.eval(),
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=[output],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamic_axes={name: {0: "batch"} for name in [*inputs, output]},
            dynamo=False,
        )
    return path


def export_unet(
    unet: nn.Module, path: str | Path, *, batch: int = 1, height: int = 512, width: int = 512, seq: int = 77
) -> Path:
    with torch.no_grad():
        return _export(UNetForExport(unet), unet_inputs(unet, batch, height, width, seq), "noise", Path(path))


def taesd_inputs(vae: nn.Module, batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, latent) example inputs of the TAESD encoder and decoder, seeded."""
    p = _param(vae)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(batch, 3, height, width, generator=g) * 2 - 1).to(p)
    latent = torch.randn(batch, vae.config.latent_channels, height // 8, width // 8, generator=g).to(p)
    return image, latent


def export_taesd(
    vae: nn.Module, out_dir: str | Path, *, batch: int = 1, height: int = 512, width: int = 512
) -> tuple[Path, Path]:
    """(encoder path, decoder path) for TAESD at one shape."""
    out_dir = Path(out_dir)
    image, latent = taesd_inputs(vae, batch, height, width)
    with torch.no_grad():
        enc = _export(
            TAESDEncoder(vae),
            {"image": image},
            "latent",
            out_dir / f"taesd_encoder_{_tag(batch, height, width)}.onnx",
        )
        dec = _export(
            TAESDDecoder(vae),
            {"latent": latent},
            "image",
            out_dir / f"taesd_decoder_{_tag(batch, height, width)}.onnx",
        )
    return enc, dec


def prompt_length(parts) -> int:
    """The length of the prompt embeddings the stylizer feeds the UNet (its tokens padded to the
    text encoder's context, or the tokenizer's if shorter)."""
    length = parts.text_encoder.config.max_position_embeddings
    if parts.tokenizer is not None:
        length = min(length, parts.tokenizer.model_max_length)
    return length


def export_for_serve(
    parts,
    label: str,
    height: int,
    width: int,
    *,
    cache: Path | None = None,
    max_batch: int | None = None,
    precision: str = "fp16",
    progress: Callable[[str], None] = lambda message: None,
) -> list[tuple[str, Path, "OnnxPlan"]]:
    """Export `parts`' UNet and TAESD encoder / decoder at one size where `camfx serve` finds them
    (camfx.engine.runtimes.cache: named by a fingerprint of the weights), each prepared for
    TensorRT (batch 1..max_batch) and described by a record written last. `label`: the model's
    name in engine names, e.g. "random/sd-turbo". Returns (engine name, exported file, plan) per
    part, for `build_plan`. `precision`: that of the engines to be built (in the records: serve
    looks engines up with it)."""
    from camfx.engine.runtimes.cache import ExportRecord, export_dir, fingerprint, part_stem
    from camfx.engine.runtimes.cache import DEFAULT_MAX_BATCH
    from camfx.models.registry import sha256_file

    from .tensorrt import prepare_onnx

    _check_size(height, width)
    max_batch = max_batch or DEFAULT_MAX_BATCH
    directory = export_dir(cache)
    directory.mkdir(parents=True, exist_ok=True)
    unet, vae = parts.unet, parts.vae
    image, latent = taesd_inputs(vae, 1, height, width)
    vae_digest = fingerprint(vae)
    jobs = [
        ("unet", fingerprint(unet), UNetForExport(unet),
         unet_inputs(unet, 1, height, width, prompt_length(parts)), "noise"),
        ("taesd_encoder", vae_digest, TAESDEncoder(vae), {"image": image}, "latent"),
        ("taesd_decoder", vae_digest, TAESDDecoder(vae), {"latent": latent}, "image"),
    ]
    out = []
    for part, digest, module, inputs, output in jobs:
        name = f"{label}:{part}_{height}x{width}"
        stem = part_stem(part, digest, height, width)
        ExportRecord.path(directory, part, digest, height, width).unlink(missing_ok=True)  # stale until done
        with torch.no_grad():
            source = _export(module, inputs, output, directory / f"{stem}.onnx")
        plan = prepare_onnx(source, directory / f"{stem}.trt.onnx", max_batch)
        ExportRecord(
            name=name, part=part, fingerprint=digest, height=height, width=width,
            source=source.name, source_sha256=sha256_file(source), onnx=plan.path.name,
            inputs={k: tuple(v) for k, v in plan.inputs.items()},
            input_dtypes={k: str(v.dtype).removeprefix("torch.") for k, v in inputs.items()},
            output=output, max_batch=max_batch, precision=precision,
        ).write(directory)
        progress(f"{name}: exported, batch 1..{max_batch}")
        out.append((name, source, plan))
    return out


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(f"size must be positive multiples of 8, got {height}x{width}")


def _tag(batch: int, height: int, width: int) -> str:
    return f"b{batch}_{height}x{width}"


def check_parity(
    module: nn.Module, path: str | Path, inputs: dict[str, torch.Tensor], tolerance: float = TOLERANCE
) -> float:
    """Run `module` (a wrapper above) in torch and the ONNX file in onnxruntime (CPU) on the same
    inputs; return the max absolute difference, raising if it is over `tolerance`."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = module.eval()(*inputs.values()).float().cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {k: v.cpu().numpy() for k, v in inputs.items()}
    got = session.run(None, feeds)[0].astype(np.float32)
    if got.shape != expected.shape:
        raise AssertionError(f"{path}: onnxruntime output shape {got.shape} != torch {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if diff > tolerance:
        raise AssertionError(f"{path}: max |onnxruntime - torch| = {diff:.3g} > {tolerance:g}")
    return diff
