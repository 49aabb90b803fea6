"""The face models' torch port, the bundled ONNX files and camfx's decoding against MediaPipe's own
face detection (short and full range) and face mesh, on photographs and augmented copies of them.

MediaPipe runs its Python solutions API (FaceDetection model_selection=0, FaceMesh with
static_image_mode so each image is detected afresh, no landmark refinement); camfx runs the
bundled ONNX files through the runtime chain (onnxruntime CPU here) from the same RGB pictures.
Boxes must overlap MediaPipe's at IoU >= 0.95; landmarks must lie within 1.5 px (median over
the 468, with the face scaled to 256 px) of MediaPipe's.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from camfx.engine.faces import geometry as g
from camfx.engine.faces.models import FaceModels
from camfx.models import registry

pytestmark = pytest.mark.unit

MIN_IOU = 0.95
MAX_MEDIAN_PX_AT_256 = 1.5


def _photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from skimage import data
    import matplotlib.image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = matplotlib.image.imread(f, format="jpg")[..., :3]
    return {"astronaut": data.astronaut(), "grace_hopper": np.ascontiguousarray(grace)}


def _augment(image: np.ndarray, kind: str) -> np.ndarray:
    """Scale, shift, rotation, brightness and flips of a photo, on a grey canvas where the
    picture moves out of its frame."""
    h, w = image.shape[:2]
    if kind == "original":
        return image
    if kind == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if kind == "dark":
        return cv2.convertScaleAbs(image, alpha=0.55, beta=0)
    if kind == "bright":
        return cv2.convertScaleAbs(image, alpha=1.2, beta=25)
    transforms = {
        "small_shifted": cv2.getRotationMatrix2D((w / 2, h / 2), 0, 0.8) + np.float64([[0, 0, -40], [0, 0, 30]]),
        "rotated_20": cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0),
        "rotated_-30_large": cv2.getRotationMatrix2D((w / 2, h / 2), -30, 1.4),
        "wide_canvas": None,
    }
    if kind == "wide_canvas":  # a landscape frame with the photo on its right
        canvas = np.full((h, int(w * 1.4), 3), 90, np.uint8)
        canvas[:, -w:] = image
        return canvas
    return cv2.warpAffine(image, transforms[kind], (w, h), borderValue=(90, 90, 90))


AUGMENTATIONS = ["original", "flip", "dark", "bright", "small_shifted", "rotated_20", "rotated_-30_large", "wide_canvas"]


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return _photos()


def _mediapipe_faces(image: np.ndarray, model_selection: int = 0) -> list[np.ndarray]:
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=model_selection) as detector:
        found = detector.process(image).detections or []
    boxes = []
    for d in found:
        b = d.location_data.relative_bounding_box
        boxes.append(np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]))
    return boxes


def _mediapipe_mesh(image: np.ndarray) -> np.ndarray:
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        result = mesh.process(image)
    assert result.multi_face_landmarks, "MediaPipe finds no face: the comparison would be vacuous"
    return np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark])


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_matches_mediapipe(photo, augmentation, photos, models):
    image = _augment(photos[photo], augmentation)
    reference = _mediapipe_faces(image)
    assert len(reference) == 1, "each picture shows one face to MediaPipe"
    ours = models.detect(image)
    assert len(ours) == 1
    iou = float(g.iou(reference[0], ours[0].box[None])[0])

    mesh = _mediapipe_mesh(image)
    points, presence = models.landmarks(image, g.roi_from_detection(ours[0]))
    face_size = float(np.ptp(mesh, axis=0).max())
    error = np.linalg.norm(points - mesh, axis=1) * 256 / face_size
    print(f"{photo:12s} {augmentation:18s} IoU {iou:.4f}  landmarks median {np.median(error):.3f} px "
          f"max {error.max():.3f} px at 256 (face {face_size:.0f} px)")
    assert iou >= MIN_IOU
    assert presence > 0
    assert np.median(error) <= MAX_MEDIAN_PX_AT_256


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_full_range_matches_mediapipe(photo, augmentation, photos, models):
    image = _augment(photos[photo], augmentation)
    reference = _mediapipe_faces(image, model_selection=1)
    assert reference, "MediaPipe's full-range detector finds the face"
    ours = models.detect(image, full_range=True)
    for box in reference:
        best = float(g.iou(box, np.stack([face.box for face in ours])).max())
        print(f"{photo:12s} {augmentation:18s} full range IoU {best:.4f}")
        assert best >= MIN_IOU


def test_full_range_finds_faces_the_short_range_misses(models):
    """A person ~3 m from a 720p camera (face ~55 px high): only the full-range detector, on the
    frame's overlapping squares, finds them; this is why tracking detects with it."""
    from camfx.bench.clip import portrait_over_scene
    from camfx.engine.media import yuv

    frame = yuv.to_rgb(portrait_over_scene(1280, 720, [(0.4, 0.1)], 0.42)[0])
    small = cv2.resize(frame, (384, 216), interpolation=cv2.INTER_AREA)  # as tracking shrinks it
    assert not [f for f in models.detect_tiled(small) if f.score >= 0.65]
    found = [f for f in models.detect_tiled(small, full_range=True) if f.score >= 0.65]
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box * (1280 / 384)
    assert 0.4 * 1280 < x0 < x1 < 0.4 * 1280 + 0.42 * 720 and 40 < y1 - y0 < 80


def test_tracking_from_landmarks_stays_on_the_face(photos, models):
    """Tracking (the next square from this frame's landmarks) lands where detection does."""
    image = _augment(photos["astronaut"], "rotated_20")
    mesh = _mediapipe_mesh(image)
    points, _ = models.landmarks(image, g.roi_from_detection(models.detect(image)[0]))
    tracked, presence = models.landmarks(image, g.roi_from_landmarks(points))
    error = np.linalg.norm(tracked - mesh, axis=1) * 256 / float(np.ptp(mesh, axis=0).max())
    assert presence > 0
    assert np.median(error) <= 3 * MAX_MEDIAN_PX_AT_256  # a slightly different square, same face


def test_no_face_no_detection(models):
    wall = np.full((360, 640, 3), 140, np.uint8)
    cv2.rectangle(wall, (100, 80), (300, 260), (40, 90, 160), -1)
    assert models.detect(wall) == []


@pytest.mark.parametrize("kind", ["detector", "landmarks", "detector_full"])
def test_torch_port_matches_onnx(kind, photos):
    import torch

    from camfx.models.face import FaceNet

    net = FaceNet.from_kind(kind)
    h, w = net.input_size
    image = cv2.resize(photos["grace_hopper"], (w, h), interpolation=cv2.INTER_AREA)[None].astype(np.float32) / 255
    with torch.no_grad():
        expected = [o.numpy() for o in net(torch.from_numpy(image))]
    name = registry.FACE_KINDS[kind]
    session = ort.InferenceSession(str(registry.model_path(name)), providers=["CPUExecutionProvider"])
    actual = session.run(list(net.output_names), {registry.INPUT_NAME: image})
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["face_detector", "face_landmarks", "face_detector_full"])
def test_onnx_contract_and_checksum(name):
    registry.verify(name)
    spec = registry.FACE_MODELS[name]
    session = ort.InferenceSession(str(registry.model_path(name)), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.shape) == ("image", [1, spec.input_height, spec.input_width, 3])
    shapes = {o.name: o.shape for o in session.get_outputs()}
    expected = {"face_detector": {"boxes": [1, 896, 16], "scores": [1, 896, 1]},
                "face_detector_full": {"boxes": [1, 2304, 16], "scores": [1, 2304, 1]},
                "face_landmarks": {"landmarks": [1, 1404], "presence": [1, 1]}}[name]
    assert shapes == expected


def test_export_reproduces_bundled_files(tmp_path):
    import onnx
    import torch

    from camfx.export.face import export_face

    paths = export_face(tmp_path)
    for name, path in zip(("face_detector", "face_landmarks", "face_detector_full"), paths, strict=True):
        bundled = registry.model_path(name)
        assert path.name == bundled.name
        if onnx.load(str(bundled)).producer_version == torch.__version__.split("+")[0]:
            assert registry.sha256_file(path) == registry.FACE_MODELS[name].sha256


def test_serving_imports_no_torch():
    code = "import sys, camfx.engine.faces.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["face_detector", "face_landmarks", "face_detector_full"])
def test_torch_runtime_runs_the_face_models(name, photos):
    """The GPU path's torch runtime (here on the CPU) executes the face files as onnxruntime does."""
    import torch

    from camfx.engine.runtimes.onnx_torch import OnnxTorchModule

    spec = registry.FACE_MODELS[name]
    image = cv2.resize(photos["astronaut"], (spec.input_width, spec.input_height), interpolation=cv2.INTER_AREA)
    batch = np.stack([image, image[:, ::-1]]).astype(np.float32) / 255  # two frames: the batch stays free
    module = OnnxTorchModule.load(registry.model_path(name))
    with torch.no_grad():
        ours = module(image=torch.from_numpy(batch))
    session = ort.InferenceSession(str(registry.model_path(name)), providers=["CPUExecutionProvider"])
    for i in range(2):
        expected = session.run(module.output_names, {"image": batch[i : i + 1]})
        for out, value in zip(module.output_names, expected, strict=True):
            np.testing.assert_allclose(ours[out][i : i + 1].numpy(), value, atol=2e-3, rtol=1e-4)
