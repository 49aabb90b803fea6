"""`camfx bench segment-skip`: what the `segment_skip` param saves and what it does to the picture.

On `camfx bench quality`'s exact-truth clips (a still part, a slow pan, a fast move and zoom, a
leave and enter), camfx at its defaults and camfx with `segment_skip` at each level given, side by
side with the raw model on the same frames: every quality figure per clip (IoU, boundary F,
flicker, lag, blur halo ...) and the model calls each camfx made. Then the bench's own clips,
a person sitting still (sensor noise only) and the swaying person: the model calls made of the
frames. Writes segment_skip.json and segment_skip.md (the quality table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters

from .clip import person_clip, still_clip
from .quality import evaluate_clip, summary, table
from .quality_clips import CLIPS
from .quality_systems import Camfx, Raw
from .stats import machine, write_json


class Skipping(Camfx):
    """camfx's pipeline with `segment_skip` set; it counts the model's calls."""

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, levels: float, name: str):
        super().__init__(segmenters, backgrounds, name)
        self._levels = levels

    def process(self, frame, effect: str):
        self._params.setdefault(effect, Params(effect=effect, segment_skip=self._levels))
        return super().process(frame, effect)

    def model_calls(self) -> dict[str, int]:
        return self._pipeline.model_calls()


def name_of(levels: float) -> str:
    return "camfx" if levels == 0 else f"camfx-skip{levels:g}"


def quality_rows(size: tuple[int, int], clips: list[str], frames: int, levels: list[float]) -> tuple[list, dict]:
    """The quality figures per clip and system, and per clip and level the model calls."""
    segmenters, backgrounds = Segmenters(), Backgrounds()
    rows, calls = [], {}
    for clip in clips:
        made: dict[str, list[Skipping]] = {}

        def factory(level: float):
            def make():
                system = Skipping(segmenters, backgrounds, level, name_of(level))
                made.setdefault(system.name, []).append(system)
                return system
            return make

        systems = {name_of(level): factory(level) for level in levels}
        systems["raw"] = lambda: Raw(segmenters, backgrounds)
        rows += evaluate_clip(clip, *size, frames, systems, ["blur"], backgrounds).rows
        calls[clip] = {name: systems_made[0].model_calls() for name, systems_made in made.items()}
    return rows, calls


def bench_clip_calls(size: tuple[int, int], frames: int, levels: list[float]) -> dict:
    """Model calls on the bench's still and swaying person, per level."""
    segmenters, backgrounds = Segmenters(), Backgrounds()
    out = {}
    for kind, clip in (("still", still_clip(*size, frames)), ("moving", person_clip(*size, frames))):
        for level in levels:
            pipeline = default_pipeline(segmenters, backgrounds)
            params = Params(effect="blur", segment_skip=level)
            for frame in clip:
                pipeline.process(Work(image=frame, params=params))
            out.setdefault(kind, {})[name_of(level)] = pipeline.model_calls()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench segment-skip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=CLIPS)
    parser.add_argument("--frames", type=int, default=120, help="frames per clip")
    parser.add_argument("--levels", nargs="+", type=float, default=[3.0, 5.0], help="segment_skip values to try")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.frames < 8 or any(level <= 0 for level in args.levels):
        parser.error("--frames must be at least 8 and every level above 0")
    size = tuple(int(v) for v in args.size.split("x"))
    levels = [0.0, *args.levels]
    rows, calls = quality_rows(size, args.clips, args.frames, levels)
    systems = [*(name_of(level) for level in levels), "raw"]
    data = {"benchmark": "segment_skip", "machine": machine(), "size": args.size, "frames": args.frames,
            "clips": args.clips, "effects": ["blur"], "systems": systems, "levels": args.levels,
            "results": rows, "summary": summary(rows, systems, ["blur"]), "quality_clip_model_calls": calls,
            "bench_clip_model_calls": bench_clip_calls(size, args.frames, levels)}
    print(table(data))
    for clip, per in calls.items():
        print(f"{clip}: model calls " + ", ".join(f"{n} {c['calls']}/{c['calls'] + c['reused']}" for n, c in per.items()))
    for kind, per in data["bench_clip_model_calls"].items():
        print(f"bench {kind} person: model calls " + ", ".join(
            f"{n} {c['calls']}/{c['calls'] + c['reused']}" for n, c in per.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    print("wrote", write_json(args.out / "segment_skip.json", data))
    (args.out / "segment_skip.md").write_text(table(data, markdown=True))
    return 0
