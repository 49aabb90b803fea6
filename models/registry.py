"""Every model camfx names: the bundled segmentation and face models (what they are, where they came from,
how to check them) and the ids of the diffusion models it knows.

Serving imports this module, so it must stay light: no torch, no onnx.

ONNX contract shared by every entry (the engine relies on it exactly; shapes are static):
  input  "image": float32 [1, input_height, input_width, 3], RGB in [0, 1]
  output "mask":  float32 [1, input_height, input_width, 1], foreground probability
The face models' contracts are in camfx.models.face (same input name, their own outputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
MODELS_DIR = Path(__file__).resolve().parent

_LICENCE = "Apache-2.0, (c) Google LLC (MediaPipe); see models/NOTICE"
_SOURCE = (
    "MediaPipe selfie segmentation, mediapipe==0.10.21 wheel, "
    "mediapipe/modules/selfie_segmentation/{tflite} (sha256 {sha256}), "
    "converted to ONNX by `camfx export selfie`"
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str  # under MODELS_DIR
    sha256: str
    input_height: int
    input_width: int
    licence: str
    source: str


SEGMENTATION_MODELS: dict[str, ModelSpec] = {
    "general": ModelSpec(
        name="general",
        filename="selfie_segmentation.onnx",
        sha256="9e94e14de31fe4c1c3ec45a886b5491c5699712577a4249f7b7781d8176906b6",
        input_height=256,
        input_width=256,
        licence=_LICENCE,
        source=_SOURCE.format(
            tflite="selfie_segmentation.tflite",
            sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        ),
    ),
    "landscape": ModelSpec(
        name="landscape",
        filename="selfie_segmentation_landscape.onnx",
        sha256="d1b113a87e88aec6cd7f3dbca7ac2b75a95bd897bd1b31b552f49de9c7306f3c",
        input_height=144,
        input_width=256,
        licence=_LICENCE,
        source=_SOURCE.format(
            tflite="selfie_segmentation_landscape.tflite",
            sha256="a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        ),
    ),
}


_FACE_SOURCE = (
    "MediaPipe {what}, mediapipe==0.10.21 wheel, mediapipe/modules/{tflite} (sha256 {sha256}), "
    "converted to ONNX by `camfx export face`"
)

FACE_MODELS: dict[str, ModelSpec] = {
    "face_detector": ModelSpec(
        name="face_detector",
        filename="face_detection_short_range.onnx",
        sha256="3156b7b1eab773e2ea5f74b8f20c3d5c14f616ddd566390261c33516a5f51aee",
        input_height=128,
        input_width=128,
        licence=_LICENCE,
        source=_FACE_SOURCE.format(
            what="face detection (short range)",
            tflite="face_detection/face_detection_short_range.tflite",
            sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        ),
    ),
    "face_landmarks": ModelSpec(
        name="face_landmarks",
        filename="face_landmark.onnx",
        sha256="1b96abd2dc71a96127f7a0c29e12b523b9b2186a90dc0f3e61788a1f3c1c554c",
        input_height=192,
        input_width=192,
        licence=_LICENCE,
        source=_FACE_SOURCE.format(
            what="face landmarks (468 points)",
            tflite="face_landmark/face_landmark.tflite",
            sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        ),
    ),
    "face_detector_full": ModelSpec(
        name="face_detector_full",
        filename="face_detection_full_range.onnx",
        sha256="b2b4b13116de46f57d8f5fbebb645072020ab10d944dd3629581791707e4d202",
        input_height=192,
        input_width=192,
        licence=_LICENCE,
        source=_FACE_SOURCE.format(
            what="face detection (full range)",
            tflite="face_detection/face_detection_full_range_sparse.tflite",
            sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        ),
    ),
}
# The face model behind each kind camfx.models.face ports.
FACE_KINDS = {"detector": "face_detector", "landmarks": "face_landmarks", "detector_full": "face_detector_full"}


# Diffusion models, by hub id (local folders laid out like the hub repos work too).
SD_TURBO = "stabilityai/sd-turbo"  # the default: one step, no guidance
TAESD = "madebyollin/taesd"  # the tiny autoencoder both families use
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the base the LCM-LoRA is fused into
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"  # served under this name
RANDOM_SD_TURBO = "random/sd-turbo"  # sd-turbo's architecture, untrained: for timing, no download


class ChecksumError(ValueError):
    """A bundled model file is not the one the registry describes."""


def _spec(name: str) -> ModelSpec:
    spec = SEGMENTATION_MODELS.get(name) or FACE_MODELS.get(name)
    if spec is None:
        valid = ", ".join([*sorted(SEGMENTATION_MODELS), *sorted(FACE_MODELS)])
        raise ValueError(f"unknown model {name!r}; valid names: {valid}")
    return spec


def model_path(name: str) -> Path:
    """Path of the bundled ONNX file for model `name`."""
    return MODELS_DIR / _spec(name).filename


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify(name: str) -> None:
    """Raise ChecksumError unless the bundled file for `name` has the registered sha256."""
    spec, path = _spec(name), model_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"bundled model {path} is missing; reinstall camfx")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the registry's {spec.sha256}; "
            "the file is corrupt or was re-exported without updating models/registry.py"
        )
