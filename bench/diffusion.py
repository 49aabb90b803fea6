"""`camfx bench diffusion`: the diffusion effect's cost per generated picture, per stage.

    camfx bench diffusion --random-weights --size 512 --steps 1

Times TAESD encode, the UNet steps and TAESD decode inside `Stylizer.img2img` (the clock
waits for the GPU at each stage boundary on CUDA), and compositing the picture behind the camera's
person at 720p. Stream batch is measured off and on in the same run (at 1 step they are the same
thing). Flicker is the mean absolute difference of consecutive outputs on a still scene with
sensor-like noise (sigma 2 grey levels), with latent feedback off and on.

In the same run, on the same weights, device and shapes: with `--compile`, camfx with its UNet
compiled (`torch.compile`, CUDA graphs on CUDA) next to eager; and when the `streamdiffusion`
package is installed (`pip install --no-deps streamdiffusion==0.1.1`), StreamDiffusion itself,
its denoising batch off and on (bench/streamdiffusion.py), with camfx's fps over its fps. The
configurations take turns picture by picture, so drift in the machine lands on all alike.

`--random-weights` builds the full-size sd-turbo architecture untrained: the speed is the real
one, the pictures are noise. On CUDA when there is one, else the CPU.

`--sessions 1,2,4,8 [--simulated]`: many streams on one device, the scheduler next to one FIFO
executor (bench/diffusion_sessions.py), simulated and (without --simulated) on real networks.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from camfx.engine.effects.mask import MaskRefiner
from camfx.engine.media import yuv
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.models.registry import SD_TURBO, TAESD

from . import streamdiffusion
from .clip import person_clip
from .stats import machine, save, summary_ms


def _frames(size: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(moving RGB frames at size x size, the matching 720p I420 camera frames)."""
    clip = person_clip(1280, 720, max(count, 2))
    return [yuv.model_input(f, size, size) for f in clip], clip


def _interleaved(configs: list, rgbs: list[np.ndarray], warmup: int) -> list[dict[str, list[float]]]:
    """Per config: per stage (those its `timings` names, if any) and "total", seconds per picture.
    The configs take turns picture by picture, so a machine's drift lands on all of them alike."""
    laps: list[dict[str, list[float]]] = [{} for _ in configs]
    for i, rgb in enumerate(rgbs):
        for stylizer, mine in zip(configs, laps):
            start = time.perf_counter()
            stylizer.img2img(rgb)  # returns a host array: the GPU has finished
            total = time.perf_counter() - start
            if i < warmup:
                continue
            for stage, seconds in getattr(stylizer, "timings", {}).items():
                mine.setdefault(stage, []).append(seconds)
            mine.setdefault("total", []).append(total)
    return laps


def _row(runtime: str, stream_batch: bool, lag: int, laps: dict[str, list[float]]) -> dict:
    total = summary_ms(laps.pop("total"))
    row = {
        "runtime": runtime, "stream_batch": stream_batch, "lag_frames": lag,
        "stages_ms": {k: summary_ms(v) for k, v in laps.items()}, "total_ms": total,
        "fps": round(1000.0 / total["p50"], 2),
    }
    print(f"{runtime:<24} stream batch {'on ' if stream_batch else 'off'} (lag {lag} frames): "
          f"{row['fps']:.2f} fps  total p50 {total['p50']:.1f} ms  p95 {total['p95']:.1f} ms  "
          + "  ".join(f"{k} {v['p50']:.1f}" for k, v in row["stages_ms"].items()), flush=True)
    return row


def _compiled(parts):
    from camfx.models.diffusion import compile_unet

    return dataclasses.replace(parts, unet=compile_unet(parts.unet, parts.device))


def _flicker(stylizer, rgb: np.ndarray, frames: int) -> float | None:
    """Mean |difference| of consecutive outputs (the first one left out: feedback starts there);
    None when the outputs are flat pictures (untrained decoders saturate), which says nothing."""
    rng = np.random.default_rng(0)
    outputs = []
    for _ in range(frames):
        noisy = np.clip(rgb.astype(np.float32) + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)
        outputs.append(stylizer.img2img(noisy).astype(np.float32))
    if max(o.std() for o in outputs) < 1.0:
        return None
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(outputs[1:], outputs[2:])]))


def run(args) -> dict:
    import torch

    from camfx.engine.diffusion.stylizer import Stylizer
    from camfx.models.diffusion import load_parts

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    parts = load_parts(args.model, taesd_id=args.taesd, device=device, random_weights=args.random_weights)
    load_s = time.perf_counter() - start
    gpu = torch.cuda.get_device_name() if parts.device.type == "cuda" else None
    print(f"model {'random sd-turbo architecture' if args.random_weights else args.model} on {parts.device}"
          f"{f' ({gpu})' if gpu else ''}, {str(parts.dtype).removeprefix('torch.')}, built in {load_s:.1f} s", flush=True)

    rgbs, clip = _frames(args.size, args.frames + args.warmup)
    variants = [("camfx eager", parts)] + ([("camfx compiled", _compiled(parts))] if args.compile else [])
    configs = []  # (runtime, stream batch, lag frames, stylizer)
    for name, variant in variants:
        for stream_batch in (False, True):
            stylizer = Stylizer(variant, prompt=args.prompt, steps=args.steps, strength=args.strength,
                                stream_batch=stream_batch)
            configs.append((name, stream_batch, stylizer.lag_frames, stylizer))
    reference = None
    if args.streamdiffusion and streamdiffusion.available():
        reference = f"streamdiffusion {streamdiffusion.version()}"
        for denoising_batch in (False, True):
            sd = streamdiffusion.Reference(parts, stylizer.embeddings, args.size, args.steps, args.strength,
                                           denoising_batch)
            configs.append((reference, denoising_batch, args.steps - 1 if denoising_batch else 0, sd))
    elif args.streamdiffusion:
        print("streamdiffusion is not installed (pip install --no-deps streamdiffusion==0.1.1): no reference row",
              flush=True)
    laps = _interleaved([c[3] for c in configs], rgbs, args.warmup)
    results = [_row(name, batch, lag, mine) for (name, batch, lag, _), mine in zip(configs, laps)]
    if reference is not None:
        for row in results:
            base = next(r for r in results if r["runtime"] == reference and r["stream_batch"] == row["stream_batch"])
            row["fps_over_streamdiffusion"] = round(row["fps"] / base["fps"], 2)
        best = max((r for r in results if r["runtime"] != reference), key=lambda r: r["fps"])
        best_sd = max((r for r in results if r["runtime"] == reference), key=lambda r: r["fps"])
        print(f"best camfx {best['fps']:.2f} fps ({best['runtime']}, stream batch {best['stream_batch']}) / best "
              f"StreamDiffusion {best_sd['fps']:.2f} fps = {best['fps'] / best_sd['fps']:.2f}x", flush=True)

    # Compositing the newest picture behind the person, per camera frame (720p, CPU).
    picture = stylizer.img2img(rgbs[0])
    frame = clip[0]
    alpha = MaskRefiner().refine(Segmenters().get("landscape")(frame), frame, feather=4)
    from camfx.engine.effects import compose

    layer = compose.layer("background", picture, 720, 1280)
    composite = []
    for _ in range(200):
        t = time.perf_counter()
        compose.blend("background", frame, layer, alpha)
        composite.append(time.perf_counter() - t)
    composite_ms = summary_ms(composite)
    print(f"composite (background mode, 720p, per camera frame): p50 {composite_ms['p50']:.2f} ms", flush=True)

    flicker: dict[str, float | None] = {"0.0": None, "0.5": None}
    for feedback in (0.0, 0.5) if not args.random_weights else ():  # untrained: nothing to say
        stylizer = Stylizer(parts, prompt=args.prompt, steps=args.steps, strength=args.strength, feedback=feedback)
        value = _flicker(stylizer, rgbs[0], args.flicker_frames)
        flicker[str(feedback)] = None if value is None else round(value, 3)
    if None in flicker.values():
        print("flicker: not measurable with random weights or flat pictures; use real weights", flush=True)
    else:
        print(f"flicker (mean |consecutive output difference|, still scene): feedback 0: {flicker['0.0']}  "
              f"feedback 0.5: {flicker['0.5']}", flush=True)
    return {
        "benchmark": "diffusion", "machine": machine(), "device": str(parts.device), "gpu": gpu,
        "dtype": str(parts.dtype), "torch": torch.__version__, "random_weights": args.random_weights,
        "model": None if args.random_weights else args.model, "size": args.size, "steps": args.steps,
        "strength": args.strength, "frames": args.frames, "compiled": args.compile, "reference": reference,
        "results": results,
        "composite_720p_ms": composite_ms, "flicker": flicker,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench diffusion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-weights", action="store_true", help="full-size sd-turbo architecture, no download")
    parser.add_argument("--model", default=SD_TURBO, help="hub id or folder (without --random-weights)")
    parser.add_argument("--taesd", default=TAESD)
    parser.add_argument("--size", type=int, default=512, help="square picture side (multiple of 8)")
    parser.add_argument("--steps", type=int, default=1, choices=[1, 2, 3, 4])
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--prompt", default="a watercolor painting, soft light")
    parser.add_argument("--frames", type=int, default=5, help="measured pictures per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--flicker-frames", type=int, default=4, help="at least 3")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the UNet compiled (CUDA graphs on CUDA); raise --warmup: the first calls compile")
    parser.add_argument("--no-streamdiffusion", dest="streamdiffusion", action="store_false",
                        help="skip the StreamDiffusion reference even when it is installed")
    parser.add_argument("--sessions", help="comma-separated stream counts: the scheduler against one FIFO executor")
    parser.add_argument("--simulated", action="store_true", help="with --sessions: the simulated device only")
    parser.add_argument("--profile", default="rtx3080", help="with --sessions: the simulated device's profile")
    parser.add_argument("--fps", type=float, default=30.0,
                        help="with --sessions: each stream's target rate (0: auto, in the real run)")
    parser.add_argument("--seconds", type=float, default=4.0, help="with --sessions: real run per policy and count")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.sessions:
        return _sessions(parser, args)
    if args.size % 8:
        parser.error("--size must be a multiple of 8")
    if args.flicker_frames < 3:
        parser.error("--flicker-frames must be at least 3")
    data = run(args)
    save(args.out, "diffusion", data)
    return 0


def _sessions(parser, args) -> int:
    from . import diffusion_sessions
    from camfx.engine.diffusion.simulated import PROFILES

    try:
        sessions = [int(n) for n in args.sessions.split(",")]
    except ValueError:
        parser.error("--sessions wants stream counts like 1,2,4,8")
    if not sessions or min(sessions) < 1:
        parser.error("--sessions wants stream counts of at least 1")
    if args.profile not in PROFILES:
        parser.error(f"--profile is one of {', '.join(PROFILES)}")
    data = {"benchmark": "diffusion-sessions", "machine": machine(),
            "simulated": diffusion_sessions.simulated(sessions, args.profile, args.fps or 30.0, args.size, args.steps)}
    if not args.simulated:
        data["real"] = diffusion_sessions.real(sessions, args)
    save(args.out, "diffusion-sessions", data)
    return 0
