"""`camfx bench runtimes`: segmentation and the whole blur pipeline per frame, on every runtime
this machine has (TensorRT, onnxruntime TensorRT / CUDA / CPU), at 720p and 1080p.

Each runtime in the chain `camfx serve` would build is loaded on its own and timed in the same
run, so GPU rows come with the CPU row as their baseline. Segmentation includes making the model
input from the I420 frame; the blur pipeline is the one sessions run (segment, refine, blur,
composite). The target for a GPU runtime is segmentation <= 0.5 ms per frame.

On a GPU (or with --device-pipeline cpu) each runtime also runs the blur pipeline that keeps the
frame on the device (engine/pipeline/device.py: one upload, one download), the GPU pipeline
`camfx serve --device cuda` uses, next to the OpenCV one.

With --sessions N (N > 1) each runtime also serves N sessions at once, each a thread sending
frames as fast as it can, first side by side (one model call per frame) and then batched
(engine/batching.py: the frames that meet share one call): total frames per second and the
per-frame latency each session sees, in the same run.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.config import ServerConfig
from camfx.engine.runtimes.batching import BatchingRuntime
from camfx.engine.runtimes.cache import cached_segmentation_plan
from camfx.engine.runtimes.chain import candidates_for
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenter
from camfx.models.registry import SEGMENTATION_MODELS, model_path

from .clip import person_clip
from .stats import machine, save, summary_ms


class _One:
    """Stands in for `Segmenters`: every model name gets the one segmenter under test."""

    def __init__(self, segmenter: Segmenter):
        self._segmenter = segmenter

    def get(self, name: str) -> Segmenter:
        return self._segmenter


def _time(fn, frames: list, count: int, warmup: int = 20) -> dict:
    """Wall time per call (p50 / p95 ...) and the process's CPU per call, helper threads included."""
    seconds = []
    for i in range(count + warmup):
        if i == warmup:
            cpu0 = time.process_time()
        start = time.perf_counter()
        fn(frames[i % len(frames)])
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return {**summary_ms(seconds), "cpu_ms_per_frame": round((time.process_time() - cpu0) * 1000 / count, 2)}


def _sessions(segmenter: Segmenter, frames: list, sessions: int, count: int) -> dict:
    """`sessions` threads, each segmenting `count` frames back to back."""
    seconds: list[float] = []
    lock = threading.Lock()

    def session(offset: int) -> None:
        mine = []
        for i in range(count):
            start = time.perf_counter()
            segmenter(frames[(offset + i) % len(frames)])
            mine.append(time.perf_counter() - start)
        with lock:
            seconds.extend(mine[count // 10 :])  # the first tenth warms up

    threads = [threading.Thread(target=session, args=(i * 7,)) for i in range(sessions)]
    start, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    # Cores: the process's own CPU clock over the wall time, so what a session costs shows
    # next to what it gets.
    return {"fps": round(sessions * count / wall, 1), "frame_ms": summary_ms(seconds),
            "cores": round(cpu / wall, 2), "cores_per_session": round(cpu / wall / sessions, 2),
            "cpu_ms_per_frame": round(cpu * 1000 / (sessions * count), 2)}


def _batching_rows(size: str, model: str, name: str, runtime, clip: list, sessions: int, frames: int) -> dict:
    plain = _sessions(Segmenter(model, runtime), clip, sessions, frames)
    batcher = BatchingRuntime(runtime)
    batched = _sessions(Segmenter(model, batcher), clip, sessions, frames)
    batched["mean_batch"] = round(batcher.frames / max(batcher.calls, 1), 2)
    print(f"{size} {model:>9} {name:<40} {sessions} sessions: side by side {plain['fps']:7.1f} fps "
          f"(p50 {plain['frame_ms']['p50']:.2f} ms, {plain['cores']:.2f} cores, {plain['cpu_ms_per_frame']:.2f} CPU ms a frame), "
          f"batched {batched['fps']:7.1f} fps (p50 {batched['frame_ms']['p50']:.2f} ms, {batched['cores']:.2f} cores, "
          f"{batched['cpu_ms_per_frame']:.2f} CPU ms a frame, mean batch {batched['mean_batch']})", flush=True)
    return {"size": size, "model": model, "runtime": name, "sessions": sessions,
            "side_by_side": plain, "batched": batched, "batched_over_side_by_side": round(batched["fps"] / plain["fps"], 2)}


def _device_pipeline(device: str) -> str | None:
    """The device for the device-pipeline rows: None for none ("off", or "auto" without CUDA)."""
    if device == "auto":
        from camfx.engine.runtimes.probe import resolve_device

        return "cuda" if resolve_device("auto") == "cuda" else None
    return None if device == "off" else device


def run(sizes: list[tuple[int, int]], models: list[str], frames: int, threads: int, sessions: int = 1,
        device_pipeline: str | None = None) -> dict:
    cv2.setNumThreads(ServerConfig().opencv_threads)  # as the server runs it
    helper = ThreadPoolExecutor(max_workers=2)
    backgrounds = Backgrounds()
    rows, batching = [], []
    for width, height in sizes:
        clip = person_clip(width, height, 30)
        for model in models:
            engine = cached_segmentation_plan(model)
            for candidate in candidates_for(model_path(model), threads, engine, batch=sessions > 1):
                try:
                    segmenter = Segmenter(model, candidate.load())
                except Exception as exc:  # listed as available, yet cannot load: say so, go on
                    print(f"{width}x{height} {model:>9} {candidate.name}: cannot load ({exc})", flush=True)
                    continue
                pipeline = default_pipeline(_One(segmenter), backgrounds, helper)
                params = Params(effect="blur", model=model)
                segment = _time(segmenter, clip, frames)
                blur = _time(lambda f: pipeline.process(Work(image=f, params=params)), clip, frames)
                row = {"size": f"{width}x{height}", "model": model, "runtime": candidate.name,
                       "segment_ms": segment, "blur_pipeline_ms": blur}
                if device_pipeline:
                    from camfx.engine.pipeline.device import DevicePipeline

                    on_device = DevicePipeline(_One(segmenter), backgrounds, pipeline, device_pipeline)
                    row["device"] = device_pipeline
                    row["device_blur_pipeline_ms"] = _time(
                        lambda f: on_device.process(Work(image=f, params=params)), clip, frames)
                rows.append(row)
                on_device_text = (f"   on {device_pipeline} p50 {row['device_blur_pipeline_ms']['p50']:6.2f}  "
                                  f"p95 {row['device_blur_pipeline_ms']['p95']:6.2f} ms" if device_pipeline else "")
                print(f"{width}x{height} {model:>9} {candidate.name:<40} segment p50 {segment['p50']:6.2f}  "
                      f"p95 {segment['p95']:6.2f} ms   blur pipeline p50 {blur['p50']:6.2f}  p95 {blur['p95']:6.2f} ms "
                      f"({blur['cpu_ms_per_frame']:.2f} CPU ms)"
                      + on_device_text, flush=True)
                if sessions > 1:
                    batching.append(_batching_rows(f"{width}x{height}", model, candidate.name, segmenter.runtime,
                                                   clip, sessions, frames))
    helper.shutdown()
    return {"benchmark": "runtimes", "machine": machine(), "frames": frames, "model_threads": threads,
            "results": rows, "sessions": batching}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench runtimes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--models", nargs="+", default=sorted(SEGMENTATION_MODELS), choices=sorted(SEGMENTATION_MODELS))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--model-threads", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=1,
                        help="also time this many concurrent sessions, side by side and batched")
    parser.add_argument("--device-pipeline", default="auto", choices=["auto", "cuda", "cpu", "off"],
                        help="also time the pipeline that keeps frames on this torch device (auto: cuda if present)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    data = run(sizes, args.models, args.frames, args.model_threads, args.sessions,
               _device_pipeline(args.device_pipeline))
    save(args.out, "runtimes", data)
    return 0
