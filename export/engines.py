"""`camfx export engines`: everything `camfx serve` can use ahead of time, into the cache.

For each bundled segmentation model (and, with --diffusion, the diffusion UNet and TAESD at each
--size): prepare the ONNX file for TensorRT (symbolic batch, optimization profile), then
build an fp16 TensorRT engine (a plan file) under its cache key. Without TensorRT the prepared ONNX files are
still written and checked, and the command says what is missing and exits 1.

Diffusion parts go to <cache>/onnx/diffusion, named by a fingerprint of the weights, where
`camfx serve` finds them for a model loaded from the same weights (under any name), and then runs
them on TensorRT if a plan was built, else onnxruntime, else torch (camfx.engine.diffusion.networks).
The stream works at the camera's aspect: at `diffusion_size` 512 a 16:9 camera
runs at 288x512, a 4:3 one at 384x512, so export those (`--size 288x512 --size 384x512`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camfx.engine.runtimes.cache import DEFAULT_MAX_BATCH, cache_dir
from camfx.models.registry import RANDOM_SD_TURBO, SD_TURBO, SEGMENTATION_MODELS, TAESD, model_path

from .tensorrt import TensorRTUnavailable, build_plan, prepare_onnx


def _progress(total: int):
    """A progress bar (tqdm when installed, else numbered lines)."""
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", file=sys.stderr)
        return lambda message: (bar.set_description(message[:60]), bar.update(1)), bar.close
    except ImportError:
        count = iter(range(1, 10**6))
        return lambda message: print(f"[{next(count)}/{total}] {message}", file=sys.stderr), lambda: None


def _size(text: str) -> tuple[int, int]:
    """"512" -> (512, 512); "288x512" -> (288, 512): height x width, multiples of 8."""
    height, _, width = text.lower().partition("x")
    try:
        size = (int(height), int(width or height))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want N or HEIGHTxWIDTH, got {text!r}") from None
    if min(size) <= 0 or size[0] % 8 or size[1] % 8:
        raise argparse.ArgumentTypeError(f"sizes must be positive multiples of 8, got {text!r}")
    return size


def _diffusion_plans(args, directory: Path, step) -> list:
    """Export the diffusion parts where serve finds them; (engine name, source, plan) per part."""
    import torch

    from camfx.models.diffusion import load_parts

    from .diffusion import export_for_serve

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    parts = load_parts(args.model, taesd_id=args.taesd, lora_id=args.lora, device=device,
                       random_weights=args.random_weights)
    label = RANDOM_SD_TURBO if args.random_weights else args.lora or args.model
    plans = []
    for height, width in args.size or [(512, 512)]:
        plans += export_for_serve(parts, label, height, width, cache=directory, max_batch=args.max_batch,
                                  precision="fp32" if args.fp32 else "fp16", progress=step)
    return plans


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx export engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH,
        help=f"sessions one engine can batch together (default {DEFAULT_MAX_BATCH}; serve looks engines up with it)",
    )
    parser.add_argument("--fp32", action="store_true", help="build fp32 engines (default fp16)")
    parser.add_argument("--cache", type=Path, default=None, help=f"where plans and exports go (default {cache_dir()})")
    parser.add_argument("--diffusion", action="store_true", help="also the diffusion UNet and TAESD")
    parser.add_argument("--model", default=SD_TURBO, help="diffusion model: hub id or folder")
    parser.add_argument("--taesd", default=TAESD, help="TAESD: hub id or folder")
    parser.add_argument("--lora", default=None, help="a LoRA to fuse (e.g. latent-consistency/lcm-lora-sdv1-5)")
    parser.add_argument("--random-weights", action="store_true",
                        help="the full-size sd-turbo architecture untrained (what `serve --random-weights` serves)")
    parser.add_argument("--size", type=_size, action="append", default=None, metavar="N|HxW",
                        help="diffusion picture size, square N or HEIGHTxWIDTH; repeat for more (default 512)")
    parser.add_argument("--device", default=None, help="device to export the diffusion parts from "
                        "(default cuda if there is one: fp16, under protobuf's 2 GB for the full UNet)")
    args = parser.parse_args(argv)
    directory = args.cache or cache_dir()
    work = directory / "onnx"

    sources = [(name, model_path(name)) for name in SEGMENTATION_MODELS]
    diffusion_steps = 6 * len(args.size or [None]) if args.diffusion else 0  # 3 parts: export, build
    step, close = _progress(2 * len(sources) + diffusion_steps)
    plans = []
    try:
        for name, source in sources:
            plan = prepare_onnx(source, work / f"{name.replace('/', '_').replace(':', '_')}.trt.onnx", args.max_batch)
            step(f"{name}: prepared {', '.join(f'{k} {v}' for k, v in plan.inputs.items())}, batch 1..{args.max_batch}")
            plans.append((name, source, plan))
        if args.diffusion:
            plans += _diffusion_plans(args, directory, step)
        for name, source, plan in plans:
            path = build_plan(name, source, plan, fp16=not args.fp32, directory=directory, progress=step)
            print(f"{name}: {path}")
    except TensorRTUnavailable as exc:
        close()
        print(f"camfx export engines: prepared ONNX files are in {work}; no engines built: {exc}", file=sys.stderr)
        if args.diffusion:
            print("camfx export engines: `camfx serve` uses the exported diffusion parts through onnxruntime "
                  "where it has a provider for the model's device", file=sys.stderr)
        return 1
    close()
    return 0
