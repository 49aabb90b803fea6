"""`camfx bench idle`: what a library call costs when the cores idled for a frame's period first.

At the camera's pace a frame's thread sleeps between frames (33 ms at 30 fps), and on a shared VM
the caches, the TLB and the branch predictors it had are gone when it wakes. Each distinct
function's first call of the frame then pays for its own code and tables again; a second call of
the same function in the same frame runs almost as it does back to back. So at the camera's pace
a stage costs about as much for the number of distinct calls it makes as for its pixels, and
`bench engine --pace-fps 30` reads 2-4x its back-to-back figure for small stages.

Each round sleeps `--idle-ms`, then makes the calls below in order on small arrays (a face-sized
plane: what the face stages' calls see): every function twice in a row, the first time after the
others before it. Reported per call: the first call's and the repeat's p50 at the pace, and the
back-to-back p50 (the same sequence with no sleep). The round's first call also pays for the
wake itself, whatever it is. Writes idle.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from .stats import machine, write_json


def calls() -> list[tuple[str, object]]:
    """(name, call) of the kinds of call a frame's stages make, on a 160x160 plane."""
    from camfx.engine.effects.blend import blend_into

    rng = np.random.default_rng(0)
    plane = rng.integers(0, 256, (160, 160), dtype=np.uint8)
    out = np.empty_like(plane)
    weight = rng.integers(0, 256, (160, 160), dtype=np.uint8)
    floats = rng.random((160, 160), dtype=np.float32)
    shift = np.float32([[1, 0, 0.5], [0, 1, 0.5]])
    return [
        ("python: sum(range(64))", lambda: sum(range(64))),
        ("cv2.add", lambda: cv2.add(plane, 3, dst=out)),
        ("cv2.mean", lambda: cv2.mean(plane)),
        ("cv2.convertScaleAbs", lambda: cv2.convertScaleAbs(floats, alpha=64.0)),
        ("cv2.warpAffine", lambda: cv2.warpAffine(plane, shift, (160, 160), dst=out)),
        ("cv2.bilateralFilter", lambda: cv2.bilateralFilter(plane, 5, 25, 3.0)),
        ("numpy: a - b", lambda: floats - floats),
        ("numpy: abs", lambda: np.abs(floats)),
        ("numpy: max", lambda: floats.max()),
        ("numba: effects.blend.blend_into", lambda: blend_into(plane, weight, 128, out)),
    ]


def measure(idle: float, rounds: int) -> list[dict]:
    sequence = calls()
    first = [[] for _ in sequence]
    again = [[] for _ in sequence]
    back_to_back = [[] for _ in sequence]
    for paced, times in ((True, (first, again)), (False, (back_to_back, None))):
        for _ in range(rounds):
            if paced:
                time.sleep(idle)
            for i, (_, call) in enumerate(sequence):
                start = time.perf_counter()
                call()
                middle = time.perf_counter()
                call()
                end = time.perf_counter()
                times[0][i].append(middle - start)
                if times[1] is not None:
                    times[1][i].append(end - middle)
    p50 = lambda values: round(float(np.median(values)) * 1e6, 1)  # noqa: E731 (µs)
    return [{"call": name, "first_us": p50(f), "again_us": p50(a), "back_to_back_us": p50(b)}
            for (name, _), f, a, b in zip(sequence, first, again, back_to_back)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench idle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-ms", type=float, default=1000 / 30, help="the sleep before each round")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.idle_ms < 0:
        parser.error("--rounds must be at least 1 and --idle-ms at least 0")
    cv2.setNumThreads(1)  # as the engine runs them
    rows = measure(args.idle_ms / 1000, args.rounds)
    width = max(len(r["call"]) for r in rows)
    print(f"{'call':<{width}}  first after {args.idle_ms:.0f} ms idle   again   back to back   (µs, p50)")
    for r in rows:
        print(f"{r['call']:<{width}}  {r['first_us']:>22.1f}  {r['again_us']:>6.1f}  {r['back_to_back_us']:>13.1f}")
    extra = sum(r["first_us"] - r["back_to_back_us"] for r in rows[1:])
    print(f"after the first: {extra:.0f} µs more than back to back for {len(rows) - 1} distinct calls")
    path = write_json(args.out / "idle.json", {"machine": machine(), "idle_ms": args.idle_ms,
                                               "rounds": args.rounds, "calls": rows})
    print(f"wrote {path}")
    return 0
