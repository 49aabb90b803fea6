"""`camfx export int8`: int8 versions of the bundled segmentation models (onnxruntime static
quantization), each checked against its fp32 model on held-out frames and timed against it on
this CPU, and kept only where it wins on both.

    camfx export int8 [--models general landscape] [--out DIR] [--runs N]

Calibration and held-out frames are camfx's own synthetic clips: the bench's portrait swaying
over backdrops (its shelves scene and scikit-image's sample photographs), at 480p and 720p,
through the same model input the engine makes. Calibration and held-out frames share no
backdrop and no frame size.

Tried per model: QDQ and QOperator formats, per-tensor and per-channel weights (uint8
activations, int8 weights, MinMax calibration). A variant qualifies when, on every held-out
frame, its mask's IoU (at 0.5) against the fp32 model's is >= MIN_IOU and its boundary F
(3 px) against the fp32 mask is >= 1 - MAX_BOUNDARY_F_DROP, and its median time per run, in
interleaved rounds on one thread (as camfx serves), is below the fp32 model's. Qualifying
files are written to --out with a JSON report of every variant; nothing is written when none
qualifies (the report says why). Bundling a winner is a separate, reviewed step: copy it into
models/ and register it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from camfx.bench.clip import person_clip
from camfx.engine.media import yuv
from camfx.models.registry import INPUT_NAME, OUTPUT_NAME, SEGMENTATION_MODELS, model_path

MIN_IOU = 0.99
MAX_BOUNDARY_F_DROP = 0.01
BOUNDARY_TOLERANCE = 3  # pixels, at model resolution

CALIBRATION_SIZES = [(640, 480)]
HELD_OUT_SIZES = [(1280, 720)]


def _backdrops() -> tuple[list[np.ndarray | None], list[np.ndarray]]:
    """(calibration backdrops, held-out backdrops): RGB photographs; None is the clip's own scene."""
    from skimage import data

    return [None, data.coffee(), data.rocket()], [data.chelsea(), data.hubble_deep_field(), data.immunohistochemistry()]


def model_inputs(name: str, sizes: list[tuple[int, int]], backdrops: list, frames: int) -> list[np.ndarray]:
    """The model's input (float32 NHWC in [0, 1], as the engine feeds it) for each clip frame."""
    spec = SEGMENTATION_MODELS[name]
    out = []
    for width, height in sizes:
        for backdrop in backdrops:
            for frame in person_clip(width, height, frames, scene=backdrop):
                rgb = yuv.model_input(frame, spec.input_height, spec.input_width)
                out.append(np.multiply(rgb, np.float32(1.0 / 255.0), dtype=np.float32)[None])
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask minus its 3x3 erosion."""
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)


def boundary_f(predicted: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE) -> float:
    """F1 of boundary pixels matched within `tolerance` pixels (1 when neither has a boundary)."""
    bp, bt = boundary(predicted), boundary(truth)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_t = cv2.dilate(bt.astype(np.uint8), kernel).astype(bool)
    near_p = cv2.dilate(bp.astype(np.uint8), kernel).astype(bool)
    precision = (bp & near_t).sum() / bp.sum()
    recall = (bt & near_p).sum() / bt.sum()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def _session(path: Path | bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as camfx serves (--model-threads 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def masks(session, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0, :, :, 0] for x in inputs]


def parity(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """IoU and boundary F of `candidate` masks against `reference` masks, frame by frame."""
    ious = [iou(r > 0.5, c > 0.5) for r, c in zip(reference, candidate)]
    fs = [boundary_f(c > 0.5, r > 0.5) for r, c in zip(reference, candidate)]
    return {"iou_min": round(min(ious), 4), "iou_mean": round(float(np.mean(ious)), 4),
            "boundary_f_min": round(min(fs), 4), "boundary_f_mean": round(float(np.mean(fs)), 4)}


def timings(sessions: dict[str, object], inputs: list[np.ndarray], runs: int, rounds: int = 7) -> dict[str, float]:
    """Median ms per run of each session, in interleaved rounds of `runs` calls."""
    per_round: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for i in range(runs):
                session.run([OUTPUT_NAME], {INPUT_NAME: inputs[i % len(inputs)]})
            per_round[name].append((time.perf_counter() - start) * 1000 / runs)
    return {name: round(float(np.median(v)), 3) for name, v in per_round.items()}


VARIANTS = {  # name -> (format, per-channel weights)
    "qdq": ("QDQ", False),
    "qdq-per-channel": ("QDQ", True),
    "qoperator": ("QOperator", False),
    "qoperator-per-channel": ("QOperator", True),
}


def quantize(name: str, calibration: list[np.ndarray], work: Path) -> dict[str, Path]:
    """Every variant of model `name`, calibrated on `calibration`, under `work`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._frames = iter(calibration)

        def get_next(self):
            x = next(self._frames, None)
            return None if x is None else {INPUT_NAME: x}

    prepared = work / f"{name}.prepared.onnx"
    quant_pre_process(str(model_path(name)), str(prepared))
    paths = {}
    for variant, (fmt, per_channel) in VARIANTS.items():
        path = work / f"{name}.{variant}.onnx"
        quantize_static(str(prepared), str(path), Frames(), quant_format=getattr(QuantFormat, fmt),
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        paths[variant] = path
    return paths


def evaluate(name: str, work: Path, frames: int = 12, runs: int = 40) -> dict:
    """Quantize model `name` every way, check each against fp32, time each against fp32."""
    calibration_backdrops, held_out_backdrops = _backdrops()
    calibration = model_inputs(name, CALIBRATION_SIZES, calibration_backdrops, frames)
    held_out = model_inputs(name, HELD_OUT_SIZES, held_out_backdrops, frames)
    paths = quantize(name, calibration, work)
    sessions = {"fp32": _session(model_path(name)), **{v: _session(p) for v, p in paths.items()}}
    reference = masks(sessions["fp32"], held_out)
    ms = timings(sessions, held_out, runs)
    report = {"model": name, "calibration_frames": len(calibration), "held_out_frames": len(held_out),
              "fp32_ms": ms["fp32"], "variants": {}}
    for variant, path in paths.items():
        check = parity(reference, masks(sessions[variant], held_out))
        accurate = check["iou_min"] >= MIN_IOU and check["boundary_f_min"] >= 1 - MAX_BOUNDARY_F_DROP
        faster = ms[variant] < ms["fp32"]
        report["variants"][variant] = {**check, "ms": ms[variant], "speed_vs_fp32": round(ms["fp32"] / ms[variant], 2),
                                       "accurate": accurate, "faster": faster, "qualifies": accurate and faster,
                                       "path": str(path)}
    return report


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="camfx export int8", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(SEGMENTATION_MODELS), choices=sorted(SEGMENTATION_MODELS))
    parser.add_argument("--out", type=Path, default=Path("int8"), help="where qualifying models and the report go")
    parser.add_argument("--frames", type=int, default=12, help="frames per clip (calibration and held out)")
    parser.add_argument("--runs", type=int, default=40, help="model runs per timing round")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            report = evaluate(name, Path(tmp), args.frames, args.runs)
            reports.append(report)
            print(f"{name}: fp32 {report['fp32_ms']:.2f} ms a run ({report['held_out_frames']} held-out frames)")
            for variant, row in report["variants"].items():
                kept = args.out / f"{name}.{variant}.int8.onnx"
                if row["qualifies"]:
                    kept.write_bytes(Path(row["path"]).read_bytes())
                row["path"] = str(kept) if row["qualifies"] else None
                verdict = "QUALIFIES" if row["qualifies"] else "rejected: " + ", ".join(
                    why for why, bad in (("not accurate enough", not row["accurate"]), ("not faster", not row["faster"])) if bad)
                print(f"  {variant:<22} {row['ms']:.2f} ms ({row['speed_vs_fp32']:.2f}x fp32's speed), IoU min "
                      f"{row['iou_min']:.3f}, boundary F min {row['boundary_f_min']:.3f}: {verdict}", flush=True)
    (args.out / "int8-report.json").write_text(json.dumps(reports, indent=1))
    print("wrote", args.out / "int8-report.json")
    return 0
