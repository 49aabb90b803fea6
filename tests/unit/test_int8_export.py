"""`camfx export int8`: the parity figures measure what they say, and a quantized model is kept
only when it is both as accurate as the fp32 one on held-out frames and faster (the verdict
follows the figures; which way it goes depends on the CPU, so the test does not fix it)."""

import numpy as np

from camfx.export.int8 import (MAX_BOUNDARY_F_DROP, MIN_IOU, boundary_f, evaluate, iou, main, masks, model_inputs,
                               parity, _session)
from camfx.models.registry import model_path
import pytest

pytestmark = pytest.mark.unit


def _disc(cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:100, 0:100]
    return (yy - 50) ** 2 + (xx - cx) ** 2 < r * r


def test_iou_and_boundary_f():
    a = _disc(50, 30)
    assert iou(a, a) == 1.0 and boundary_f(a, a) == 1.0
    assert boundary_f(_disc(52, 30), a) == 1.0  # 2 px off: within the 3 px tolerance
    assert boundary_f(_disc(60, 30), a) < 0.5  # 10 px off
    assert 0.5 < iou(_disc(60, 30), a) < 0.8
    assert boundary_f(np.zeros_like(a), a) == 0.0


def test_the_fp32_model_against_itself_is_exact():
    inputs = model_inputs("landscape", [(640, 480)], [None], 3)
    reference = masks(_session(model_path("landscape")), inputs)
    assert parity(reference, reference) == {"iou_min": 1.0, "iou_mean": 1.0, "boundary_f_min": 1.0,
                                            "boundary_f_mean": 1.0}
    assert all((m > 0.5).mean() > 0.1 for m in reference)  # the clip has a person in it


def test_every_variant_is_judged_by_its_figures(tmp_path):
    report = evaluate("landscape", tmp_path, frames=2, runs=2)
    assert report["held_out_frames"] == 6 and report["calibration_frames"] == 6
    assert set(report["variants"]) == {"qdq", "qdq-per-channel", "qoperator", "qoperator-per-channel"}
    for row in report["variants"].values():
        assert row["accurate"] == (row["iou_min"] >= MIN_IOU and row["boundary_f_min"] >= 1 - MAX_BOUNDARY_F_DROP)
        assert row["faster"] == (row["ms"] < report["fp32_ms"])
        assert row["qualifies"] == (row["accurate"] and row["faster"])
        assert 0.0 <= row["iou_min"] < 1.0  # quantized: not the fp32 model's masks exactly


def test_the_command_writes_only_what_qualifies(tmp_path):
    import json

    assert main(["--models", "landscape", "--frames", "2", "--runs", "2", "--out", str(tmp_path)]) == 0
    (report,) = json.loads((tmp_path / "int8-report.json").read_text())
    kept = {p.name for p in tmp_path.glob("*.onnx")}
    assert kept == {f"landscape.{v}.int8.onnx" for v, row in report["variants"].items() if row["qualifies"]}
