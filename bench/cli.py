"""`camfx bench NAME`: benchmarks that write JSON and PNG plots."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "latency": "camfx.bench.latency",
    "engine": "camfx.bench.engine",
    "diffusion": "camfx.bench.diffusion",
    "runtimes": "camfx.bench.runtimes",
    "encode": "camfx.bench.encode",
    "soak": "camfx.bench.soak",
    "camera": "camfx.bench.camera",
    "capacity": "camfx.bench.capacity",
    "cluster": "camfx.bench.cluster",
    "quality": "camfx.bench.quality",
    "reference": "camfx.bench.reference",
    "segment-skip": "camfx.bench.segment_skip",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: camfx bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0
