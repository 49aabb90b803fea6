"""`camfx bench engine`: the pipeline's compute per frame, per stage, without WebRTC.

Feeds the synthetic person clip through the same Pipeline sessions use and reports median and
p95 per stage and in total, per effect and frame size, with `none` as the same-run baseline.
Each stage's CPU time on the frame's thread (time.thread_time) is reported beside its wall
time: on a shared machine it is the steadier figure (it leaves out waits for a core); the face
models' CPU time on the helper pool is reported per frame too.

By default frames follow each other back to back (hot caches: the engine's best case). With
`--pace-fps 30` they come at a camera's rate and the cores idle between frames, as when serving;
on a shared VM, work after such an idle runs markedly slower, and this mode shows by how much.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.config import ServerConfig
from camfx.engine.params import Params, ParamsError
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters

from .clip import person_clip
from .stats import axes, machine, save, summary_ms


def run(
    sizes: list[tuple[int, int]], effects: list[str], frames: int, model: str, threads: int, pace_fps: float = 0.0,
    face: dict | None = None,
) -> dict:
    """`face`: face parameters (framing, light, ...) to compare: each effect then runs twice,
    without and with them, frame by frame in turn (each frame goes through both pipelines, in
    alternating order), and the row with them says what they added."""
    cv2.setNumThreads(ServerConfig().opencv_threads)  # as the server runs it
    segmenters, backgrounds = Segmenters(threads=threads), Backgrounds()
    helper = ThreadPoolExecutor(max_workers=2)  # as the server's: background layer alongside the model
    results = []
    for width, height in sizes:
        clip = person_clip(width, height, 60)
        for effect in effects:
            configs = [("", Params(effect=effect, model=model))]
            if face:
                configs.append(("+face", Params(effect=effect, model=model, **face)))
            pipelines = [default_pipeline(segmenters, backgrounds, helper) for _ in configs]
            per_stage: list[dict[str, list[float]]] = [{} for _ in configs]
            totals: list[list[float]] = [[] for _ in configs]
            cpu: list[dict[str, list[float]]] = [{} for _ in configs]
            for pipeline, times in zip(pipelines, cpu):
                pipeline.stages = [CpuTimed(stage, times) for stage in pipeline.stages]

            next_frame = time.perf_counter()
            cpu_totals: list[list[float]] = [[] for _ in configs]
            for i in range(frames + 20):
                if i == 20:  # warm-up over: CPU times from here on, as the wall times
                    for times in cpu:
                        times.clear()
                if pace_fps:  # wait for the camera's next frame, as a session does
                    next_frame += 1.0 / pace_fps
                    time.sleep(max(0.0, next_frame - time.perf_counter()))
                order = range(len(configs)) if i % 2 == 0 else reversed(range(len(configs)))
                for k in order:
                    work = Work(image=clip[i % len(clip)], params=configs[k][1], t_recv=time.perf_counter())
                    pipelines[k].process(work)
                    if i < 20:  # warm-up: first runs allocate and fill caches
                        continue
                    for stage, seconds in work.timings.items():
                        per_stage[k].setdefault(stage, []).append(seconds)
                    totals[k].append(sum(work.timings.values()))
                    cpu_totals[k].append(sum(times[-1] for times in cpu[k].values()))
            for k, (suffix, params) in enumerate(configs):
                row = {
                    "size": f"{width}x{height}", "effect": effect + suffix, "model": model,
                    "total_ms": summary_ms(totals[k]),
                    "stages_ms": {s: summary_ms(v) for s, v in per_stage[k].items()},
                    "cpu_total_ms": summary_ms(cpu_totals[k]),
                    "cpu_stages_ms": {s: summary_ms(v) for s, v in cpu[k].items()},
                }
                if suffix:
                    row["face"] = face
                    row["added_p50_ms"] = row["total_ms"]["p50"] - results[-1]["total_ms"]["p50"]
                    row["added_cpu_p50_ms"] = row["cpu_total_ms"]["p50"] - results[-1]["cpu_total_ms"]["p50"]
                    tracker = next(s.tracker for s in pipelines[k].stages if hasattr(s, "tracker"))
                    if tracker is not None and tracker.steps:
                        # The face models run beside the frames (helper pool): their time per frame.
                        row["tracker_ms_per_frame"] = tracker.busy_seconds * 1000 / (frames + 20)
                        row["tracker_ms_per_step"] = tracker.busy_seconds * 1000 / tracker.steps
                        row["tracker_cpu_ms_per_frame"] = tracker.busy_cpu_seconds * 1000 / (frames + 20)
                results.append(row)
                t = row["total_ms"]
                print(f"{row['size']:>9} {row['effect']:>13}: total p50 {t['p50']:6.2f} ms  p95 {t['p95']:6.2f} ms  "
                      + "  ".join(f"{s} {v['p50']:.2f}" for s, v in row["stages_ms"].items() if v["p50"] >= 0.005)
                      + f"  | CPU p50 {row['cpu_total_ms']['p50']:.2f} ms: "
                      + "  ".join(f"{s} {v['p50']:.2f}" for s, v in row["cpu_stages_ms"].items() if v["p50"] >= 0.005)
                      + (f"  | added p50 {row['added_p50_ms']:+.2f} ms (CPU {row['added_cpu_p50_ms']:+.2f} ms), face "
                         f"models beside the frame {row.get('tracker_ms_per_frame', 0):.2f} ms/frame "
                         f"(CPU {row.get('tracker_cpu_ms_per_frame', 0):.2f})" if suffix else ""), flush=True)
    return {
        "benchmark": "engine", "machine": machine(), "frames": frames, "model_threads": threads,
        "pace_fps": pace_fps, "results": results,
    }


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


PIPELINE_ORDER = ["low_light", "face", "framing", "background", "segment", "people", "refine", "effect",
                  "touch_up", "light"]


def plot(data: dict):
    rows = data["results"]
    labels = [f"{r['effect']}\n{r['size']}" for r in rows]
    stages = sorted({s for r in rows for s in r["stages_ms"]}, key=lambda s: PIPELINE_ORDER.index(s)
                    if s in PIPELINE_ORDER else len(PIPELINE_ORDER))
    fig, ax = axes(max(6, len(rows) * 0.9), 4)
    bottom = [0.0] * len(rows)
    for stage in stages:
        values = [r["stages_ms"].get(stage, {}).get("p50", 0.0) for r in rows]
        ax.bar(labels, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.plot(labels, [r["total_ms"]["p95"] for r in rows], "k_", markersize=20, label="total p95")
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
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    try:
        face = dict(item.split("=", 1) for item in args.face)
        Params().updated(face)
    except (ValueError, ParamsError) as exc:
        parser.error(f"--face: {exc}")
    if args.pace_fps < 0:
        parser.error("--pace-fps must be 0 or more")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    data = run(sizes, args.effects, args.frames, args.model, args.model_threads, args.pace_fps, face)
    save(args.out, "engine", data, plot)
    return 0
