"""`camfx export face`: MediaPipe face detection and face landmark .tflite -> torch port -> checked,
bundled ONNX.

    camfx export face [--out DIR] [--wheel PATH]

The defaults rewrite the files bundled in camfx.models. As with `camfx export selfie`, the bytes
are reproducible for a given torch / onnx version; after re-exporting with another version,
update the sha256 values in models/registry.py and models/NOTICE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from camfx.models.face import TFLITE_FILES, FaceNet, find_face_tflite
from camfx.models.registry import FACE_KINDS, FACE_MODELS, INPUT_NAME, MODELS_DIR, sha256_file
from camfx.models.tflite_graph import read_tflite

from .selfie import write_onnx

TOLERANCE = 1e-3  # max |onnxruntime - torch| on the check input (raw offsets reach ~100)


def export_face(out_dir: Path = MODELS_DIR, kinds: tuple[str, ...] = ("detector", "landmarks", "detector_full"),
                wheel: Path | None = None) -> list[Path]:
    """Export each face model to `out_dir`/<registry filename>, check it, return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds:
        tflite = find_face_tflite(kind, wheel)
        spec = FACE_MODELS[FACE_KINDS[kind]]
        model = FaceNet(read_tflite(tflite), TFLITE_FILES[kind][2])
        if model.input_size != (spec.input_height, spec.input_width):
            raise ValueError(f"{tflite}: input {model.input_size} does not match the registry's {spec}")
        path = out_dir / spec.filename
        write_onnx(model, _example(*model.input_size), path, spec, model.output_names)
        _check(model, path)
        print(f"{path}  sha256 {sha256_file(path)}  (from {tflite}, sha256 {sha256_file(tflite)})")
        paths.append(path)
    return paths


def _example(height: int, width: int) -> torch.Tensor:
    """A smooth deterministic picture, [1, H, W, 3] in [0, 1]: something for every channel to
    respond to, so the onnxruntime check compares real activations."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(6 * x), 0.5 + 0.4 * torch.cos(5 * y), x * y], -1)[None]


def _check(model: FaceNet, path: Path) -> None:
    example = _example(*model.input_size)
    with torch.no_grad():
        expected = [o.numpy() for o in model(example)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(list(model.output_names), {INPUT_NAME: example.numpy()})
    for name, a, e in zip(model.output_names, actual, expected):
        diff = float(np.abs(a - e).max())
        if a.shape != e.shape or diff > TOLERANCE:
            raise RuntimeError(f"{path}: {name}: onnxruntime differs from torch (max |diff| {diff:.2e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="camfx export face",
        description="Convert MediaPipe's face detection and face landmark models to ONNX.",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--wheel", type=Path, help="a mediapipe 0.10.21 wheel to read the .tflite files from")
    args = parser.parse_args(argv)
    export_face(args.out, wheel=args.wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
