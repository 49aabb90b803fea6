"""`camfx export engines`: everything `camfx serve` can use ahead of time, into the engine cache.

For each bundled segmentation model (and, with --diffusion, the diffusion UNet and TAESD at one
resolution): prepare the ONNX file for TensorRT (symbolic batch, optimization profile), then
build an fp16 TensorRT engine under its cache key. Without TensorRT the prepared ONNX files are
still written and checked, and the command says what is missing and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from camfx.engine.engine_cache import DEFAULT_MAX_BATCH, cache_dir
from camfx.models.registry import SEGMENTATION_MODELS, model_path

from .tensorrt import TensorRTUnavailable, build_engine, prepare_onnx


def _progress(total: int):
    """A progress bar (tqdm when installed, else numbered lines)."""
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", file=sys.stderr)
        return lambda message: (bar.set_description(message[:60]), bar.update(1)), bar.close
    except ImportError:
        count = iter(range(1, 10**6))
        return lambda message: print(f"[{next(count)}/{total}] {message}", file=sys.stderr), lambda: None


def _diffusion_sources(work: Path, size: int, random_weights: bool, model: str) -> list[tuple[str, Path]]:
    from camfx.models.diffusion import StreamStylizer

    from .diffusion import export_stylizer

    stylizer = StreamStylizer(model, random_weights=random_weights, device="cpu")
    paths = export_stylizer(stylizer, work / "diffusion", height=size, width=size)
    name = "random/sd-turbo" if random_weights else model
    return [(f"{name}:{part}_{size}x{size}", Path(path)) for part, path in paths.items()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx export engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH,
        help=f"sessions one engine can batch together (default {DEFAULT_MAX_BATCH}; serve looks engines up with it)",
    )
    parser.add_argument("--fp32", action="store_true", help="build fp32 engines (default fp16)")
    parser.add_argument("--cache", type=Path, default=None, help=f"engine cache (default {cache_dir()})")
    parser.add_argument("--diffusion", action="store_true", help="also the diffusion UNet and TAESD")
    parser.add_argument("--model", default="stabilityai/sd-turbo")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    directory = args.cache or cache_dir()
    work = directory / "onnx"

    sources = [(name, model_path(name)) for name in SEGMENTATION_MODELS]
    if args.diffusion:
        sources += _diffusion_sources(work, args.size, args.random_weights, args.model)
    step, close = _progress(2 * len(sources))
    plans = []
    try:
        for name, source in sources:
            plan = prepare_onnx(source, work / f"{name.replace('/', '_').replace(':', '_')}.trt.onnx", args.max_batch)
            step(f"{name}: prepared {', '.join(f'{k} {v}' for k, v in plan.inputs.items())}, batch 1..{args.max_batch}")
            plans.append((name, source, plan))
        for name, source, plan in plans:
            path = build_engine(name, source, plan, fp16=not args.fp32, directory=directory, progress=step)
            print(f"{name}: {path}")
    except TensorRTUnavailable as exc:
        close()
        print(f"camfx export engines: prepared ONNX files are in {work}; no engines built: {exc}", file=sys.stderr)
        return 1
    close()
    return 0
