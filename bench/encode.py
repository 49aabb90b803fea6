"""`camfx bench encode`: what an effect's output costs the video encoder, per frame.

Glass-to-glass latency includes encoding, and an effect changes the picture the encoder gets:
a blurred background, a keyed one, a person's moving outline. This runs the synthetic clip
through the pipeline once per effect, then encodes every effect's frames with aiortc's own
encoders (VP8 and H.264, as in a session), interleaved frame by frame so the machine's drift
lands on all of them alike, and reports encode time (median, p95) and bytes per frame, with
`none` (the camera's own picture, what the echo baseline encodes) as the baseline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aiortc.codecs import get_encoder
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters

from .clip import person_clip
from .stats import axes, machine, save, summary_ms

WARMUP = 30  # the encoder's rate control settles over the first frames


def outputs(clip: list, effects: list[str]) -> dict[str, list]:
    """Each effect's output frames for the clip (the pipeline's state carries over, as live)."""
    pipeline = default_pipeline(Segmenters(), Backgrounds())
    return {e: [pipeline.process(Work(image=f, params=Params(effect=e))).output for f in clip] for e in effects}


def run(sizes, codecs, effects, frames: int, whole_pixels: bool) -> dict:
    results = []
    for width, height in sizes:
        clip = person_clip(width, height, 60, whole_pixels=whole_pixels)
        pictures = outputs(clip, effects)
        for codec in codecs:
            encoders = {e: get_encoder(RTCRtpCodecParameters(mimeType=f"video/{codec}", clockRate=VIDEO_CLOCK_RATE))
                        for e in effects}
            seconds = {e: [] for e in effects}
            sizes_b = {e: [] for e in effects}
            for i in range(frames + WARMUP):
                for effect in effects:
                    frame = VideoFrame.from_ndarray(pictures[effect][i % len(clip)], format="yuv420p")
                    frame.pts, frame.time_base = i * VIDEO_CLOCK_RATE // 30, VIDEO_TIME_BASE
                    start = time.perf_counter()
                    payloads, _ = encoders[effect].encode(frame)
                    if i >= WARMUP:
                        seconds[effect].append(time.perf_counter() - start)
                        sizes_b[effect].append(sum(map(len, payloads)))
            for effect in effects:
                row = {
                    "size": f"{width}x{height}", "codec": codec, "effect": effect,
                    "encode_ms": summary_ms(seconds[effect]),
                    "bytes_per_frame": int(sorted(sizes_b[effect])[len(sizes_b[effect]) // 2]),
                }
                results.append(row)
            base = next(r for r in results if r["size"] == f"{width}x{height}" and r["codec"] == codec
                        and r["effect"] == effects[0])["encode_ms"]["p50"]
            for r in results[-len(effects):]:
                t = r["encode_ms"]
                print(f"{r['size']:>9} {codec:>4} {r['effect']:>8}: encode p50 {t['p50']:6.2f} ms "
                      f"({t['p50'] - base:+.2f} vs {effects[0]})  p95 {t['p95']:6.2f} ms  "
                      f"{r['bytes_per_frame']} B/frame", flush=True)
    return {"benchmark": "encode", "machine": machine(), "frames": frames, "whole_pixels": whole_pixels,
            "results": results}


def plot(data: dict):
    rows = data["results"]
    fig, ax = axes(max(6, len(rows) * 0.7), 4)
    labels = [f"{r['effect']}\n{r['codec']} {r['size']}" for r in rows]
    ax.bar(labels, [r["encode_ms"]["p50"] for r in rows])
    ax.plot(labels, [r["encode_ms"]["p95"] for r in rows], "k_", markersize=16, label="p95")
    ax.set_ylabel("encode ms per frame (median)")
    ax.set_title("what each effect's output costs the encoder")
    ax.legend()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench encode", description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--codecs", nargs="+", default=["VP8", "H264"], choices=["VP8", "H264"])
    parser.add_argument("--effects", nargs="+", default=["none", "blur", "replace", "remove"])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--whole-pixels", action="store_true",
                        help="the person moves by whole pixels, a rigid picture (for comparison)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be 1 or more")
    if "none" in args.effects:  # the baseline first
        args.effects = ["none"] + [e for e in args.effects if e != "none"]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    data = run(sizes, args.codecs, args.effects, args.frames, args.whole_pixels)
    save(args.out, "encode", data, plot)
    return 0
