"""`camfx bench reference`: camfx's blur pipeline per frame against a plain reference compose of
the kind popular CPU virtual-background tools use (Linux-Fake-Background-Webcam's class), on the
same frames in the same run.

The reference, written here for the comparison: the frame as the camera gives it to OpenCV (BGR),
converted to RGB for MediaPipe's own selfie segmentation (the `mediapipe` package's solution, the
landscape model, its mask at frame size), the mask softened by a small Gaussian, the whole frame
Gaussian-blurred with Linux-Fake-Background-Webcam's documented default (a 21-pixel kernel,
sigma = 21 / 3, at every frame size: a lighter blur than camfx's default sigma 12 at 720p), and
the two blended per pixel in float: out = frame * mask + blurred * (1 - mask).

camfx: the frames as decoded VideoFrames (I420) through `stream.process_frame` (views of the
planes, the default blur pipeline with its helper thread, the result wrapped as a VideoFrame).

The two run in interleaved rounds at the camera's pace (`--pace-fps`, 30 by default: the cores
idle between frames, as when serving; 0 for back to back). Reported per size: wall time and the
process's CPU per frame (helper and library threads included), median over rounds, and the ratio
reference / camfx of each.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from av import VideoFrame

from camfx.engine.media import yuv
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.config import ServerConfig
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.stream import process_frame

from .clip import person_clip
from .stats import machine, save, summary_ms

WARMUP = 10


class ReferenceBlur:
    """The plain compose: MediaPipe's mask, a Gaussian-blurred frame, a float blend (BGR in and out)."""

    def __init__(self, kernel: int = 21, sigma_fraction: int = 3):
        import mediapipe as mp

        self._segmentation = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
        self._kernel, self._sigma = kernel, kernel / sigma_fraction

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        mask = self._segmentation.process(rgb).segmentation_mask
        mask = cv2.GaussianBlur(mask, (5, 5), 0)[..., None]
        blurred = cv2.GaussianBlur(bgr, (self._kernel, self._kernel), self._sigma)
        return (bgr * mask + blurred * (1.0 - mask)).astype(np.uint8)

    def close(self) -> None:
        self._segmentation.close()


def _time(fn, frames: list, count: int, pace_fps: float) -> tuple[list[float], float]:
    """Wall seconds per call and the process's CPU seconds per call, paced like a camera."""
    walls = []
    next_frame = time.perf_counter()
    for i in range(count + WARMUP):
        if pace_fps:
            next_frame += 1.0 / pace_fps
            time.sleep(max(0.0, next_frame - time.perf_counter()))
        if i == WARMUP:
            cpu0 = time.process_time()
        start = time.perf_counter()
        fn(frames[i % len(frames)])
        if i >= WARMUP:
            walls.append(time.perf_counter() - start)
    return walls, (time.process_time() - cpu0) / count


def run(sizes: list[tuple[int, int]], frames: int, rounds: int, pace_fps: float) -> dict:
    cv2.setNumThreads(ServerConfig().opencv_threads)  # as the server runs it
    helper = ThreadPoolExecutor(max_workers=2)
    pipeline = default_pipeline(Segmenters(), Backgrounds(), helper)
    params = Params(effect="blur")
    reference = ReferenceBlur()
    rows = []
    for width, height in sizes:
        clip = person_clip(width, height, 60)
        decoded = [VideoFrame.from_ndarray(f, format="yuv420p") for f in clip]
        bgr = [cv2.cvtColor(yuv.to_rgb(f), cv2.COLOR_RGB2BGR) for f in clip]

        def camfx(frame: VideoFrame) -> None:
            process_frame(pipeline, frame, Work(image=np.empty(0, np.uint8), params=params))

        walls: dict[str, list[float]] = {"camfx": [], "reference": []}
        cpus: dict[str, list[float]] = {"camfx": [], "reference": []}
        for _ in range(rounds):  # interleaved: both see the same state of a shared machine
            for name, fn, inputs in (("camfx", camfx, decoded), ("reference", reference, bgr)):
                wall, cpu = _time(fn, inputs, frames, pace_fps)
                walls[name] += wall
                cpus[name].append(cpu)
        row = {"size": f"{width}x{height}"}
        for name in walls:
            row[name] = {"wall_ms": summary_ms(walls[name]), "cpu_ms_per_frame": round(float(np.median(cpus[name])) * 1000, 3)}
        row["wall_ratio"] = round(row["reference"]["wall_ms"]["p50"] / row["camfx"]["wall_ms"]["p50"], 2)
        row["cpu_ratio"] = round(row["reference"]["cpu_ms_per_frame"] / row["camfx"]["cpu_ms_per_frame"], 2)
        rows.append(row)
        print(f"{row['size']:>9}: camfx p50 {row['camfx']['wall_ms']['p50']:6.2f} ms ({row['camfx']['cpu_ms_per_frame']:.2f} CPU ms), "
              f"reference p50 {row['reference']['wall_ms']['p50']:6.2f} ms ({row['reference']['cpu_ms_per_frame']:.2f} CPU ms): "
              f"camfx {row['wall_ratio']:.2f}x faster by wall time, {row['cpu_ratio']:.2f}x by CPU", flush=True)
    reference.close()
    helper.shutdown()
    return {"benchmark": "reference", "machine": machine(), "frames": frames, "rounds": rounds,
            "pace_fps": pace_fps, "results": rows}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--frames", type=int, default=100, help="frames per system per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pace-fps", type=float, default=30.0, help="the camera's rate (0: back to back)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rounds < 1 or args.pace_fps < 0:
        parser.error("--frames and --rounds must be at least 1, --pace-fps 0 or more")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    save(args.out, "reference", run(sizes, args.frames, args.rounds, args.pace_fps))
    return 0
