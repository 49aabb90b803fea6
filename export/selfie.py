"""`camfx export selfie`: MediaPipe selfie .tflite -> torch port -> checked, bundled ONNX.

    camfx export selfie [--out DIR] [--wheel PATH]

The defaults rewrite the files bundled in camfx.models. The output bytes are reproducible for a
given torch / onnx version (the exporter records its version in the file); after re-exporting
with another version, update the sha256 values in models/registry.py and models/NOTICE.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from camfx.models.registry import (
    INPUT_NAME,
    MODELS_DIR,
    OUTPUT_NAME,
    SEGMENTATION_MODELS,
    ModelSpec,
    sha256_file,
)
from camfx.models.selfie import SelfieSegmenter, find_selfie_tflite

OPSET = 17
TOLERANCE = 2e-4  # max |onnxruntime - torch| on the check input (its sharp edges amplify float noise)


def export_selfie(
    out_dir: Path = MODELS_DIR,
    variants: tuple[str, ...] = ("general", "landscape"),
    wheel: Path | None = None,
) -> list[Path]:
    """Export each variant to `out_dir`/<registry filename>, check it, return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in variants:
        tflite = find_selfie_tflite(variant, wheel)  # also rejects unknown variants
        spec = SEGMENTATION_MODELS[variant]
        model = SelfieSegmenter.from_tflite(tflite)
        if model.input_size != (spec.input_height, spec.input_width):
            raise ValueError(f"{tflite}: input {model.input_size} does not match the registry's {spec}")
        path = out_dir / spec.filename
        write_onnx(model, _example(*model.input_size), path, spec, [OUTPUT_NAME])
        _check(model, path)
        print(f"{path}  sha256 {sha256_file(path)}  (from {tflite}, sha256 {sha256_file(tflite)})")
        paths.append(path)
    return paths


def _example(height: int, width: int) -> torch.Tensor:
    """A head-and-shoulders silhouette on a light wall, [1, H, W, 3].

    Random noise would do for tracing, but the network maps it to a mask of zeros, which
    would make the onnxruntime check vacuous; this shape gives a real edge to compare.
    """
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    head = ((x - 0.5) / 0.12) ** 2 + ((y - 0.38) / 0.2) ** 2 < 1
    body = ((x - 0.5) / 0.35) ** 2 + ((y - 1.05) / 0.4) ** 2 < 1
    image = torch.tensor([0.85, 0.85, 0.8]).repeat(height, width, 1)
    image[body] = torch.tensor([0.15, 0.2, 0.35])
    image[head] = torch.tensor([0.85, 0.65, 0.5])
    return image[None]


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, spec: ModelSpec,
               output_names: list[str]) -> None:
    """`model` traced on `example` into one checked ONNX file at `path`, its source and licence
    in the file's doc string (`camfx export selfie` and `camfx export face` alike)."""
    # The TorchScript exporter (deprecated in favour of dynamo, which may write a separate
    # .onnx.data file) gives one self-contained file with a plain graph.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    proto.doc_string = f"{spec.source}. Licence: {spec.licence}."
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _check(model: SelfieSegmenter, path: Path) -> None:
    example = _example(*model.input_size)
    with torch.no_grad():
        expected = model(example).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
    if not (expected > 0.5).any():
        raise RuntimeError(f"{path}: the torch port finds no person in the check image")
    diff = float(np.abs(actual - expected).max())
    if actual.shape != expected.shape or diff > TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime differs from torch (max |diff| {diff:.2e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="camfx export selfie",
        description="Convert MediaPipe's selfie segmentation models to ONNX.",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--wheel", type=Path, help="a mediapipe 0.10.14-0.10.21 wheel to read the .tflite files from"
    )
    args = parser.parse_args(argv)
    export_selfie(args.out, wheel=args.wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
