"""`camfx bench engine`: the pipeline's compute per frame, per stage, without WebRTC.

Feeds a synthetic person clip through the frame path sessions use: each frame a decoded-like
VideoFrame handed from the event loop to a worker thread (`stream.process_frame`: I420 views,
the Pipeline, the result wrapped as a VideoFrame) and back. Reports per effect and frame size the
median and p95 per stage (convert_in and convert_out included), the whole hand-off as the event
loop sees it (`wall`), what lies outside every stage (`overhead`: the executor hand-off and
wake-up, Work and frame objects), and the process's CPU per frame (helper threads included:
the face models' step a frame starts is waited for before the next frame), with `none` as the
same-run baseline. With `--face`, each effect also runs with the face stages on, frame by frame
in turn with the run without them (each frame through both pipelines, in alternating order),
and that row says what they added; the face models' time is also reported apart. `--compare`
does the same for any parameters (`--compare mask_region=false`: the model on the whole frame).

By default frames follow each other back to back (hot caches: the engine's best case). With
`--pace-fps 30` they come at a camera's rate and the cores idle between frames, as when serving;
on a shared VM, work after such an idle runs markedly slower, and this mode shows by how much.

`--clip still` is a person sitting still (sensor noise only), for `--segment-skip`: the model
calls it saves are in the output (`model_calls` out of the frames that needed a mask).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from av import VideoFrame

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.config import ServerConfig
from camfx.engine.params import Params, ParamsError
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.stream import process_frame

from .clip import person_clip, still_clip
from .stats import axes, machine, save, summary_ms

WARMUP = 20  # first frames allocate and fill caches
STAGE_ORDER = ["convert_in", "low_light", "face", "framing", "background", "segment", "people", "refine", "effect",
               "touch_up", "light", "framing_out", "convert_out"]


async def _feed(runs: list[tuple], executor, clip: list[VideoFrame], frames: int, pace_fps: float) -> list[dict]:
    """Every frame through `process_frame` on a worker thread, as a stream hands it over, once per
    (pipeline, params) of `runs`: all of them on the same frame, one after another in an order
    that alternates from frame to frame (so none is always the one that runs after the idle),
    before the next frame. A stat per run."""
    loop = asyncio.get_running_loop()
    per_stage: list[dict[str, list[float]]] = [{} for _ in runs]
    walls: list[list[float]] = [[] for _ in runs]
    overheads: list[list[float]] = [[] for _ in runs]
    cpu = [0.0] * len(runs)
    next_frame = time.perf_counter()
    for i in range(frames + WARMUP):
        if pace_fps:  # wait for the camera's next frame, as a session does
            next_frame += 1.0 / pace_fps
            await asyncio.sleep(max(0.0, next_frame - time.perf_counter()))
        order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            pipeline, params = runs[k]
            work = Work(image=np.empty(0, np.uint8), params=params, t_recv=time.perf_counter())
            cpu0, start = time.process_time(), time.perf_counter()
            await loop.run_in_executor(executor, process_frame, pipeline, clip[i % len(clip)], work)
            wall = time.perf_counter() - start
            # The face models' step this frame left to run after it: done before the next run's
            # frame starts, so that one is not slowed by it (its CPU is this run's).
            tracker = getattr(pipeline.stage("face"), "tracker", None)
            if tracker is not None and tracker.in_flight is not None:
                await asyncio.wrap_future(tracker.in_flight)
            if i < WARMUP:
                continue
            # The process's CPU while this run had the frame (helper threads' work included).
            cpu[k] += time.process_time() - cpu0
            for stage, seconds in work.timings.items():
                per_stage[k].setdefault(stage, []).append(seconds)
            walls[k].append(wall)
            overheads[k].append(wall - sum(work.timings.values()))
    return [{
        "wall_ms": summary_ms(walls[k]), "overhead_ms": summary_ms(overheads[k]),
        "stages_ms": {n: summary_ms(per_stage[k][n]) for n in sorted(per_stage[k], key=_stage_key)},
        "cpu_ms_per_frame": round(cpu[k] * 1000 / frames, 3),
    } for k in range(len(runs))]


class CpuTimed:
    """A pipeline stage that also records its CPU time on the calling thread (time.thread_time)
    into `times` under its name; everything else is the stage's own."""

    def __init__(self, stage, times: dict[str, list[float]]):
        self._stage, self._times = stage, times
        self.name = stage.name

    def __call__(self, work: Work) -> None:
        start = time.thread_time()
        self._stage(work)
        self._times.setdefault(self.name, []).append(time.thread_time() - start)

    def __getattr__(self, attribute: str):
        return getattr(self._stage, attribute)


def _cpu_rows(times: dict[str, list[float]]) -> dict:
    """Per-stage and per-frame CPU medians, the warm-up frames left out."""
    kept = {stage: values[WARMUP:] for stage, values in times.items() if len(values) > WARMUP}
    frames = min((len(v) for v in kept.values()), default=0)
    per_frame = [sum(v[i] for v in kept.values()) for i in range(frames)]
    return {"cpu_stages_ms": {k: summary_ms(v) for k, v in sorted(kept.items(), key=lambda kv: _stage_key(kv[0]))},
            "cpu_total_ms": summary_ms(per_frame) if per_frame else None}


def _stage_key(name: str) -> int:
    return STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER)


def _clip(kind: str, width: int, height: int) -> list[VideoFrame]:
    """The clip as decoded-like frames (PyAV's own padded buffers, as a decoder gives)."""
    frames = still_clip(width, height, 60) if kind == "still" else person_clip(width, height, 60)
    return [VideoFrame.from_ndarray(f, format="yuv420p") for f in frames]


def run(
    sizes: list[tuple[int, int]], effects: list[str], frames: int, model: str, threads: int, pace_fps: float = 0.0,
    clip_kind: str = "moving", segment_skip: float = 0.0, face: dict | None = None, label: str = "+face",
) -> dict:
    """`face`: face parameters (framing, light, ...), or any others, to compare: each effect then
    runs twice, without and with them, frame by frame in turn (each frame goes through both
    pipelines, in alternating order), and the row with them (its effect named with `label`) says
    what they added."""
    cv2.setNumThreads(ServerConfig().opencv_threads)  # as the server runs it
    segmenters, backgrounds = Segmenters(threads=threads), Backgrounds()
    # As the server's: a worker pool for the frames, a helper pool for work alongside the model.
    workers = ThreadPoolExecutor(max_workers=2)
    helper = ThreadPoolExecutor(max_workers=2)
    results = []
    for width, height in sizes:
        clip = _clip(clip_kind, width, height)
        for effect in effects:
            configs = [("", Params(effect=effect, model=model, segment_skip=segment_skip))]
            if face:  # the same run again with the face stages on: the row says what they added
                configs.append((label, Params(effect=effect, model=model, segment_skip=segment_skip, **face)))
            pipelines, cpu_times = [], []
            for _ in configs:
                pipeline = default_pipeline(segmenters, backgrounds, helper)
                cpu_times.append({})
                pipeline.stages = [CpuTimed(stage, cpu_times[-1]) for stage in pipeline.stages]
                pipelines.append(pipeline)
            fed = asyncio.run(_feed([(pipe, params) for pipe, (_, params) in zip(pipelines, configs)],
                                    workers, clip, frames, pace_fps))
            for (suffix, params), pipeline, times, stats in zip(configs, pipelines, cpu_times, fed):
                row = {"size": f"{width}x{height}", "effect": effect + suffix, "model": model, **stats,
                       **_cpu_rows(times)}
                row["total_ms"] = row["wall_ms"]
                row["model_calls"] = pipeline.model_calls()
                if suffix:
                    row["face" if label == "+face" else "compared"] = face
                    row["added_p50_ms"] = row["total_ms"]["p50"] - results[-1]["total_ms"]["p50"]
                    row["added_cpu_ms_per_frame"] = row["cpu_ms_per_frame"] - results[-1]["cpu_ms_per_frame"]
                    row["added_cpu_p50_ms"] = row["cpu_total_ms"]["p50"] - results[-1]["cpu_total_ms"]["p50"]
                    tracker = next((s.tracker for s in pipeline.stages if hasattr(s, "tracker")), None)
                    if tracker is not None and tracker.steps:
                        # The face models run beside the frames (helper pool): their time per frame.
                        row["tracker_ms_per_frame"] = tracker.busy_seconds * 1000 / (frames + WARMUP)
                        row["tracker_ms_per_step"] = tracker.busy_seconds * 1000 / tracker.steps
                results.append(row)
                stages = row["stages_ms"]
                calls = row["model_calls"]["calls"] + row["model_calls"]["reused"]
                print(f"{row['size']:>9} {row['effect']:>13}: wall p50 {row['wall_ms']['p50']:6.2f} ms  "
                      f"p95 {row['wall_ms']['p95']:6.2f}  CPU {row['cpu_ms_per_frame']:5.2f} ms/frame  | "
                      + "  ".join(f"{k} {v['p50']:.2f}" for k, v in stages.items())
                      + f"  overhead {row['overhead_ms']['p50']:.2f}"
                      + (f"  | model on {row['model_calls']['calls']}/{calls} frames" if calls else "")
                      + (f"  | added p50 {row['added_p50_ms']:+.2f} ms, face models beside the frame "
                         f"{row.get('tracker_ms_per_frame', 0):.2f} ms/frame" if suffix else ""), flush=True)
    workers.shutdown()
    helper.shutdown()
    return {
        "benchmark": "engine", "machine": machine(), "frames": frames, "model_threads": threads,
        "pace_fps": pace_fps, "clip": clip_kind, "segment_skip": segment_skip, "results": results,
    }


def plot(data: dict):
    rows = data["results"]
    labels = [f"{r['effect']}\n{r['size']}" for r in rows]
    stages = sorted({s for r in rows for s in r["stages_ms"]}, key=_stage_key)
    fig, ax = axes(max(6, len(rows) * 0.9), 4)
    bottom = [0.0] * len(rows)
    for stage in stages:
        values = [r["stages_ms"].get(stage, {}).get("p50", 0.0) for r in rows]
        ax.bar(labels, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.bar(labels, [r["overhead_ms"]["p50"] for r in rows], bottom=bottom, label="overhead (outside stages)",
           color="lightgrey")
    ax.plot(labels, [r["wall_ms"]["p95"] for r in rows], "k_", markersize=20, label="wall p95")
    ax.set_ylabel("ms per frame (median, stacked)")
    ax.set_title(f"camfx engine compute per frame ({data['machine']['cores']} cores)")
    ax.legend()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench engine", description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--effects", nargs="+", default=["none", "blur", "replace", "remove", "toon"])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--model", default="landscape", choices=["general", "landscape"])
    parser.add_argument("--model-threads", type=int, default=1)
    parser.add_argument("--pace-fps", type=float, default=0.0,
                        help="feed frames at this rate, idling between them as when serving (0: back to back)")
    parser.add_argument("--face", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="face parameters to compare against none, interleaved (e.g. framing=follow "
                             "light=studio touch_up=0.5)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="any parameters to compare against the same effect without them, interleaved "
                             "(e.g. mask_region=false: the model on the whole frame)")
    parser.add_argument("--clip", choices=["moving", "still"], default="moving",
                        help="the swaying person, or a person sitting still (noise only)")
    parser.add_argument("--segment-skip", type=float, default=0.0,
                        help="the segment_skip param: reuse the last mask while the picture barely moves")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.face and args.compare:
        parser.error("--face or --compare, not both")
    option, items = ("--face", args.face) if args.face else ("--compare", args.compare)
    try:
        face = dict(item.split("=", 1) for item in items)
        Params().updated(face)
    except (ValueError, ParamsError) as exc:
        parser.error(f"{option}: {exc}")
    label = "+face" if args.face else "+" + ",".join(items)
    if args.pace_fps < 0:
        parser.error("--pace-fps must be 0 or more")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    data = run(sizes, args.effects, args.frames, args.model, args.model_threads, args.pace_fps,
               args.clip, args.segment_skip, face, label)
    save(args.out, "engine", data, plot)
    return 0
