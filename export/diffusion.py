"""ONNX export of the diffusion stylizer's networks, with static shapes, and a parity check.

One file per network, resolution and batch (static shapes: TensorRT and onnxruntime plan each
shape best, and the stream runs at one resolution at a time):

    unet_b{B}_{H}x{W}.onnx          sample [B,4,H/8,W/8], timestep [B], encoder_hidden_states
                                    [B,77,D] -> noise [B,4,H/8,W/8] (all float)
    taesd_encoder_b{B}_{H}x{W}.onnx image [B,3,H,W] in [-1,1] -> latent [B,4,H/8,W/8]
    taesd_decoder_b{B}_{H}x{W}.onnx latent [B,4,H/8,W/8] -> image [B,3,H,W] in [-1,1]

Exported with the TorchScript exporter (`dynamo=False`, opset 17): it writes one self-contained
file for small models and needs no onnxscript. The networks are exported in the dtype and on the
device they are in (fp16 on CUDA: the SD 2.1 UNet is 3.5 GB in fp32, over protobuf's 2 GB limit,
1.7 GB in fp16). Only the tiny test models have been exported and checked here; the full-size
export has not been run on our machines.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


def unet_inputs(unet: nn.Module, batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """Example inputs of the UNet at one shape, seeded, in the UNet's dtype and device."""
    p = _param(unet)
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    seq = 77  # CLIP's context length; the tiny test text encoders use less but the UNet does not care
    return {
        "sample": torch.randn(batch, cfg.in_channels, height // 8, width // 8, generator=g).to(p),
        "timestep": torch.full((batch,), 499.0).to(p),
        "encoder_hidden_states": torch.randn(batch, seq, cfg.cross_attention_dim, generator=g).to(p),
    }


def _export(module: nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path) -> Path:
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
            dynamo=False,
        )
    return path


def export_unet(
    unet: nn.Module, path: str | Path, *, batch: int = 1, height: int = 512, width: int = 512
) -> Path:
    with torch.no_grad():
        return _export(UNetForExport(unet), unet_inputs(unet, batch, height, width), "noise", Path(path))


def export_taesd(
    vae: nn.Module, out_dir: str | Path, *, batch: int = 1, height: int = 512, width: int = 512
) -> tuple[Path, Path]:
    """(encoder path, decoder path) for TAESD at one shape."""
    out_dir = Path(out_dir)
    p = _param(vae)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(batch, 3, height, width, generator=g) * 2 - 1).to(p)
    latent = torch.randn(batch, vae.config.latent_channels, height // 8, width // 8, generator=g).to(p)
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


def export_stylizer(
    stylizer, out_dir: str | Path, *, height: int = 512, width: int = 512, batch: int = 1
) -> dict[str, Path]:
    """Export a `StreamStylizer`'s UNet and TAESD at one resolution and batch."""
    out_dir = Path(out_dir)
    unet = export_unet(
        stylizer.unet,
        out_dir / f"unet_{_tag(batch, height, width)}.onnx",
        batch=batch,
        height=height,
        width=width,
    )
    enc, dec = export_taesd(stylizer.vae, out_dir, batch=batch, height=height, width=width)
    return {"unet": unet, "taesd_encoder": enc, "taesd_decoder": dec}


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
