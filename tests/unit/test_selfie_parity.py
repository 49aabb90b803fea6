"""The torch port and the bundled ONNX files against MediaPipe's own selfie segmentation.

MediaPipe's SelfieSegmentationCpu graph (mediapipe/modules/selfie_segmentation/
selfie_segmentation_cpu.binarypb) is: ImageToTensorCalculator (stretch the image to the
model's input size, no letterbox, scale to [0, 1]) -> InferenceCalculator (TFLite with the
XNNPACK delegate) -> TensorsToSegmentationCalculator (activation NONE: the model already ends
in a sigmoid; the mask is resized back to the image size). There is no temporal smoothing in
that graph; a fresh instance per image keeps every call independent anyway. Feeding images
already at model resolution makes both resizes identities, so MediaPipe's mask is the raw
model output and the comparison is like for like.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest

from camfx.models import registry

pytestmark = pytest.mark.unit

MAX_ABS_DIFF = 1e-3
MIN_IOU = 0.99


def _photos() -> dict[str, np.ndarray]:
    """Real photographs of people, uint8 RGB, from packages the test extra installs."""
    from matplotlib import cbook
    from skimage import data
    import matplotlib.image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = matplotlib.image.imread(f, format="jpg")
    return {
        "astronaut": data.astronaut(),
        "camera": np.repeat(data.camera()[..., None], 3, axis=2),
        "grace_hopper": grace[..., :3],
    }


@pytest.fixture(scope="module")
def model_inputs() -> dict[tuple[str, str], np.ndarray]:
    """(variant, photo) -> uint8 RGB photo resized to the variant's input size."""
    import cv2

    return {
        (name, photo): cv2.resize(image, (spec.input_width, spec.input_height), interpolation=cv2.INTER_AREA)
        for name, spec in registry.SEGMENTATION_MODELS.items()
        for photo, image in _photos().items()
    }


def _mediapipe_mask(variant: str, image: np.ndarray) -> np.ndarray:
    import mediapipe as mp
    selection = {"general": 0, "landscape": 1}[variant]
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=selection) as seg:
        return seg.process(image).segmentation_mask


def _onnx_mask(path, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = image[None] / np.float32(255)
    return session.run([registry.OUTPUT_NAME], {registry.INPUT_NAME: batch})[0][0, ..., 0]


@functools.cache
def _torch_model(variant: str):
    from camfx.models.selfie import SelfieSegmenter

    return SelfieSegmenter.from_variant(variant)


def _torch_mask(variant: str, image: np.ndarray) -> np.ndarray:
    import torch

    model = _torch_model(variant)
    with torch.no_grad():
        batch = torch.from_numpy(image[None] / np.float32(255))
        return model(batch)[0, ..., 0].numpy()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("photo", ["astronaut", "camera", "grace_hopper"])
@pytest.mark.parametrize("variant", ["general", "landscape"])
def test_matches_mediapipe(variant, photo, model_inputs):
    image = model_inputs[variant, photo]
    reference = _mediapipe_mask(variant, image)
    assert reference.shape == image.shape[:2]
    # Each photo shows a person: a near-empty mask would make the comparison vacuous.
    assert (reference > 0.5).mean() > 0.05

    for label, mask in [
        ("torch", _torch_mask(variant, image)),
        ("onnx", _onnx_mask(registry.model_path(variant), image)),
    ]:
        diff = float(np.abs(mask - reference).max())
        iou = _iou(mask, reference)
        print(f"{variant:9s} {photo:12s} {label:5s} max|diff| {diff:.2e}  IoU {iou:.5f}")
        assert diff <= MAX_ABS_DIFF, label
        assert iou >= MIN_IOU, label


@pytest.mark.parametrize("variant", ["general", "landscape"])
def test_rewrites_keep_the_output(variant, model_inputs):
    """The port's rewrites (NHWC first conv, 1x1 convs and means moved before upsamples, pools
    and same-shape Muls in the squeeze-and-excitation blocks) change only the order of float
    sums: the rewritten port and the op-by-op one agree on every photo."""
    import torch

    from camfx.models.selfie import SelfieSegmenter

    plain = SelfieSegmenter.from_variant(variant, rewrite=False)
    rewritten = _torch_model(variant)
    assert rewritten._nhwc_input and not plain._nhwc_input
    assert [k for k, _, _ in rewritten._steps] != [k for k, _, _ in plain._steps]  # convs moved
    for photo in ("astronaut", "camera", "grace_hopper"):
        batch = torch.from_numpy(model_inputs[variant, photo][None] / np.float32(255))
        with torch.no_grad():
            diff = float((rewritten(batch) - plain(batch)).abs().max())
        # Means over up to 128 x 128 pixels summed in another order: up to ~1.2e-4 apart.
        assert diff <= 3e-4, photo


def test_bilinear_upsample_keeps_the_mean():
    """The identity behind moving the decoder's means before its upsamples."""
    import torch

    from camfx.models.selfie import _is_upsample2x
    from torch import nn

    upsample = nn.Upsample(scale_factor=(2.0, 2.0), mode="bilinear", align_corners=False)
    assert _is_upsample2x(upsample)
    small = torch.rand(1, 5, 9, 16, dtype=torch.float64) * 10 - 3
    torch.testing.assert_close(upsample(small).mean(dim=(2, 3)), small.mean(dim=(2, 3)), rtol=0, atol=1e-12)


def test_bundled_graphs_avoid_layout_conversions():
    """No input Transpose, no ReduceMean, no broadcast Mul: each would make onnxruntime convert
    tensors out of its blocked layout and back."""
    import onnx

    for name in registry.SEGMENTATION_MODELS:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(registry.model_path(name))))
        graph = model.graph
        readers = [node.op_type for node in graph.node if registry.INPUT_NAME in node.input]
        assert readers == ["Reshape"], name
        assert "ReduceMean" not in {node.op_type for node in graph.node}, name
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
        for node in graph.node:
            if node.op_type == "Mul":
                assert shapes[node.input[0]] == shapes[node.input[1]], (name, node.name)


def test_registry_checksums_match_bundled_files():
    for name in registry.SEGMENTATION_MODELS:
        registry.verify(name)


def test_registry_does_not_import_torch():
    code = "import sys, camfx.models.registry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match="general, landscape"):
        registry.model_path("portrait")


def test_verify_rejects_a_modified_file(tmp_path, monkeypatch):
    spec = registry.SEGMENTATION_MODELS["general"]
    (tmp_path / spec.filename).write_bytes(registry.model_path("general").read_bytes() + b"\0")
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    with pytest.raises(registry.ChecksumError):
        registry.verify("general")


@pytest.mark.parametrize("name", ["general", "landscape"])
def test_onnx_contract(name):
    spec = registry.SEGMENTATION_MODELS[name]
    session = ort.InferenceSession(str(registry.model_path(name)), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    h, w = spec.input_height, spec.input_width
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(float)", [1, h, w, 3])
    assert (out.name, out.type, out.shape) == ("mask", "tensor(float)", [1, h, w, 1])


def test_export_reproduces_bundled_files(tmp_path, model_inputs):
    import onnx
    import torch

    from camfx.export.selfie import export_selfie

    paths = export_selfie(tmp_path)
    assert [p.name for p in paths] == [s.filename for s in registry.SEGMENTATION_MODELS.values()]
    for name, path in zip(registry.SEGMENTATION_MODELS, paths, strict=True):
        bundled = registry.model_path(name)
        image = model_inputs[name, "astronaut"]
        np.testing.assert_allclose(_onnx_mask(path, image), _onnx_mask(bundled, image), atol=1e-6)
        # The exporter is deterministic; bytes can only differ under another torch version.
        if onnx.load(str(bundled)).producer_version == torch.__version__.split("+")[0]:
            assert registry.sha256_file(path) == registry.SEGMENTATION_MODELS[name].sha256


def test_find_tflite_in_a_wheel(tmp_path, monkeypatch):
    from camfx.models.selfie import find_selfie_tflite

    monkeypatch.delenv("CAMFX_MEDIAPIPE_WHEEL", raising=False)
    installed = find_selfie_tflite("landscape")
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"mediapipe/modules/selfie_segmentation/{installed.name}", installed.read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CAMFX_MEDIAPIPE_WHEEL", str(wheel))
    found = find_selfie_tflite("landscape")
    assert found.is_relative_to(tmp_path / "cache")
    assert found.read_bytes() == installed.read_bytes()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mediapipe"):
        find_selfie_tflite("general")
