"""`camfx bench NAME`: benchmarks that write JSON and PNG plots."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {  # name -> (what it measures, module, the extras it needs)
    "latency": ("glass-to-glass latency and fps over real WebRTC, against an echo server", "camfx.bench.latency",
                "bench"),
    "engine": ("the pipeline's compute per frame and per stage, without WebRTC", "camfx.bench.engine", "bench"),
    "diffusion": ("the diffusion effect's cost per picture, per stage (and StreamDiffusion's, if installed)",
                  "camfx.bench.diffusion", "bench,diffusion"),
    "runtimes": ("segmentation and blur per frame on every runtime this machine has (TensorRT, CUDA, CPU)",
                 "camfx.bench.runtimes", "bench"),
    "encode": ("what each effect's output costs the video encoder", "camfx.bench.encode", "bench"),
    "soak": ("one session for a long time: fps, latency, memory and threads, window by window",
             "camfx.bench.soak", "bench"),
    "camera": ("what `camfx camera` adds between a camera and its output", "camfx.bench.camera", "bench"),
    "capacity": ("how many sessions one server holds at the camera's rate", "camfx.bench.capacity", "bench"),
    "cluster": ("the Ray cluster path against a plain `camfx serve`, round by round", "camfx.bench.cluster",
                "bench,cluster"),
    "quality": ("picture quality against exact ground truth: mask, edges, halo, fringe, flicker",
                "camfx.bench.quality", "bench"),
    "backgrounds": ("what a video background costs the frame path, against a still one", "camfx.bench.backgrounds",
                    "bench"),
    "reference": ("camfx's blur pipeline against a plain MediaPipe-mask + Gaussian-blur compose, per frame",
                  "camfx.bench.reference", "bench"),
    "idle": ("what a library call costs the first time after a frame's idle, against back to back",
             "camfx.bench.idle", "bench"),
    "segment-skip": ("picture figures and model calls with and without skipping the model on still frames",
                     "camfx.bench.segment_skip", "bench"),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = ["usage: camfx bench NAME [options]   (camfx bench NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {what}" for name, (what, _, _) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if not argv or argv[0] not in BENCHMARKS:
        if argv:
            print(f"camfx bench: no benchmark named {argv[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    _, module, extra = BENCHMARKS[argv[0]]
    try:
        return importlib.import_module(module).main(argv[1:]) or 0
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top == "camfx":
            raise  # a bug of ours, not a missing extra
        print(f"camfx: `camfx bench {argv[0]}` needs {top}, which is not installed: pip install 'camfx[{extra}]'",
              file=sys.stderr)
        return 1
