"""`camfx bench quality`: how the person looks, measured against exact ground truth.

Clips of a person with a frozen alpha matte composited over real backgrounds (see
`quality_clips`) go frame by frame through camfx's pipeline and, side by side on the same frames,
through the raw bundled model with a plain blend (see `quality_systems`), for blur, replace and
remove at the defaults. Figures per clip (see `quality_metrics`):

  iou          mask (alpha >= .5) intersection over union, pooled over frames
  alpha_err    mean abs alpha error
  boundary_f   boundary F: boundary = mask minus its 3x3 erosion, matched within 3 px
  flicker      mean |alpha_t - alpha_t-1| over frames where the truth does not change, x1e-3
  lag          frame offset in [-3, 3] best aligning predicted and true mask centroids while moving
  blur halo    blur: mean of (output vs input, inner band) and (output vs the same blur of the
               person-free frame, outer band)
  replace fringe  replace: output vs the ideal I + (1 - A)(new - old background), both bands (the
               old background as the camera saw it, noise included)
  key fringe   remove: output vs the ideal A * I + (1 - A) * key, both bands
  ms           per-frame cost, median (information only)

Bands reach H/30 px from the true edge: inner where A >= .99, outer where A <= .01. Output
figures are mean abs differences in 8-bit levels over R, G and B, the ideal going through the same
I420 round trip as any output. Writes quality.json, quality.md (the table) and
quality-crops-WxH.png (edge crops: the ideal, raw and camfx per effect) under --out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from camfx.engine import effects as fx
from camfx.engine import yuv
from camfx.engine.backgrounds import Backgrounds
from camfx.engine.params import Params, hex_to_rgb
from camfx.engine.segmenter import Segmenters

from .quality_clips import CLIPS, Frame, clip_frames, still_frame
from .quality_metrics import BandFigure, MaskFigures, bands
from .quality_systems import EFFECTS, Camfx, Raw, System
from .stats import machine, write_json

BAND_DIVISOR = 30  # band width: the frame's height / this
OUTPUT_FIGURE = {"blur": "blur_halo", "replace": "replace_fringe", "remove": "key_fringe"}
SystemFactory = Callable[[Segmenters, Backgrounds], System]
DEFAULT_SYSTEMS: dict[str, SystemFactory] = {
    "camfx": lambda s, b: Camfx(s, b),
    "raw": lambda s, b: Raw(s, b),
}


def _rgb(frame_i420: np.ndarray) -> np.ndarray:
    return yuv.to_rgb(frame_i420).astype(np.float32)


def _round_trip(rgb: np.ndarray) -> np.ndarray:
    """An ideal RGB picture as it looks after the I420 round trip every output makes."""
    return _rgb(yuv.from_rgb(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)))


class References:
    """What one frame's outputs are judged against, per effect: (inner band reference, outer
    band reference, the ideal picture for the contact sheet), all RGB after an I420 round trip."""

    def __init__(self, frame: Frame, backgrounds: Backgrounds):
        self.frame = frame
        self._backgrounds = backgrounds
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        h = frame.alpha.shape[0]
        self.inner, self.outer = bands(frame.alpha, h / BAND_DIVISOR)
        self.input = _rgb(frame.image)

    def get(self, effect: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if effect not in self._cache:
            self._cache[effect] = self._make(effect)
        return self._cache[effect]

    def _make(self, effect: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f, p = self.frame, Params(effect=effect)
        h, w = f.alpha.shape
        a = f.alpha[..., None]
        camera_person = f.person + f.noise  # the person as the camera saw it
        if effect == "blur":
            empty_room = yuv.from_rgb(np.clip(f.background + f.noise + 0.5, 0, 255).astype(np.uint8))
            room_blurred = _rgb(fx.blurred(empty_room, p.blur_strength))
            ideal = _round_trip(a * camera_person + (1 - a) * room_blurred)
            return self.input, room_blurred, ideal
        if effect == "replace":
            new = _rgb(self._backgrounds.frame(p.background_image, h, w))
            # I + (1 - A)(new - old), the old background as the camera saw it (noise and all):
            # the new background comes in clean, as any system's layer does.
            camera_room = f.background + f.noise
            ideal = _round_trip(a * camera_person + (1 - a) * camera_room + (1 - a) * (new - camera_room))
            return ideal, ideal, ideal
        if effect == "remove":
            key = np.array(hex_to_rgb(p.key_color), np.float32)
            ideal = _round_trip(a * camera_person + (1 - a) * key)
            return ideal, ideal, ideal
        raise ValueError(f"no quality figure for effect {effect!r}; effects: {', '.join(EFFECTS)}")


@dataclass
class Track:
    """One system on one effect over one clip."""

    name: str
    system: System
    effect: str
    mask: MaskFigures = field(default_factory=MaskFigures)
    output: BandFigure = field(default_factory=BandFigure)
    seconds: list[float] = field(default_factory=list)


@dataclass
class ClipResult:
    rows: list[dict]
    sheet: dict  # effect -> {"ideal": rgb, system name: rgb}, and "alpha": the truth


def evaluate_clip(clip: str, width: int, height: int, frames: int, systems: dict[str, System],
                  effects: list[str], backgrounds: Backgrounds, sheet_frame: int | None = None) -> ClipResult:
    """Every system on every effect over one clip, frame by frame, interleaved on the same frames.

    `systems`: name -> a callable making a fresh System (one is made per effect: each keeps its
    own temporal state). The contact sheet's pictures are taken at `sheet_frame` (default: the
    last still frame).
    """
    tracks = [Track(name, factory(), effect) for name, factory in systems.items() for effect in effects]
    for t in tracks:
        t.system.reset()
    sheet_frame = still_frame(frames) if sheet_frame is None else sheet_frame
    sheet: dict = {}
    for i, frame in enumerate(clip_frames(clip, width, height, frames)):
        refs = References(frame, backgrounds)
        for t in tracks:
            start = time.perf_counter()
            alpha, output = t.system.process(frame.image, t.effect)
            t.seconds.append(time.perf_counter() - start)
            t.mask.add(alpha, frame.alpha, frame.moving)
            inner_ref, outer_ref, ideal = refs.get(t.effect)
            out_rgb = _rgb(output)
            t.output.add(out_rgb, inner_ref, outer_ref, refs.inner, refs.outer)
            if i == sheet_frame:
                sheet.setdefault(t.effect, {"ideal": ideal})[t.name] = out_rgb
                sheet["alpha"] = frame.alpha
    rows = []
    for t in tracks:
        rows.append({
            "size": f"{width}x{height}", "clip": clip, "system": t.name, "effect": t.effect, "frames": frames,
            "mask": t.mask.result(), OUTPUT_FIGURE[t.effect]: t.output.result(),
            "ms_p50": round(float(np.median(t.seconds)) * 1000, 2),
        })
    return ClipResult(rows, sheet)


def run(sizes: list[tuple[int, int]], clips: list[str], frames: int, effects: list[str],
        systems: dict[str, SystemFactory] | None = None, sheets: Path | None = None) -> dict:
    """The figures of every system on every clip, size and effect; with `sheets`, a contact
    sheet per size written there. `systems`: name -> factory(segmenters, backgrounds)."""
    systems = systems or DEFAULT_SYSTEMS
    segmenters, backgrounds = Segmenters(), Backgrounds()
    rows = []
    for width, height in sizes:
        size_sheets = {}
        for clip in clips:
            factories = {name: (lambda f=f: f(segmenters, backgrounds)) for name, f in systems.items()}
            result = evaluate_clip(clip, width, height, frames, factories, effects, backgrounds)
            rows += result.rows
            size_sheets[clip] = result.sheet
        if sheets is not None:
            path = sheets / f"quality-crops-{width}x{height}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(size_sheets, list(systems), effects), cv2.COLOR_RGB2BGR))
            print("wrote", path)
    return {
        "benchmark": "quality", "machine": machine(), "frames": frames, "sizes": [f"{w}x{h}" for w, h in sizes],
        "clips": clips, "effects": effects, "systems": list(systems), "params": Params().model_dump(),
        "band_divisor": BAND_DIVISOR, "results": rows, "summary": summary(rows, list(systems), effects),
    }


# The table: figure name -> (where it is in a row, how to print it, the effect it needs or None).
FIGURES = {
    "IoU": (("mask", "iou"), "{:.3f}", None),
    "alpha err": (("mask", "alpha_error"), "{:.4f}", None),
    "boundary F": (("mask", "boundary_f"), "{:.3f}", None),
    "flicker x1e-3": (("mask", "flicker_x1e3"), "{:.2f}", None),
    "lag (frames)": (("mask", "lag_frames"), "{:+.0f}", None),
    "blur halo": (("blur_halo", "levels"), "{:.2f}", "blur"),
    "replace fringe": (("replace_fringe", "levels"), "{:.2f}", "replace"),
    "key fringe": (("key_fringe", "levels"), "{:.2f}", "remove"),
    "ms/frame p50": (("ms_p50",), "{:.1f}", None),
}


def _value(row: dict, where: tuple[str, ...]):
    for key in where:
        row = row.get(key) if isinstance(row, dict) else None
    return row


def figure_rows(rows: list[dict], figure: str, system: str, effects: list[str]) -> list[dict]:
    """The rows a figure is read from: its own effect's, or for mask figures and cost the first
    effect's (the mask does not depend on the effect today; the JSON has every effect's)."""
    where, _, effect = FIGURES[figure]
    effect = effect or effects[0]
    return [r for r in rows if r["system"] == system and r["effect"] == effect]


def summary(rows: list[dict], systems: list[str], effects: list[str]) -> dict:
    """Per size, per figure: per system the value per clip and the mean of clips, and each
    system's mean over the raw model's."""
    out: dict = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        sized = [r for r in rows if r["size"] == size]
        for figure, (where, _, effect) in FIGURES.items():
            if effect is not None and effect not in effects:
                continue
            entry = {}
            for system in systems:
                values = {r["clip"]: _value(r, where) for r in figure_rows(sized, figure, system, effects)}
                known = [v for v in values.values() if v is not None]
                entry[system] = {"clips": values, "mean": float(np.mean(known)) if known else None}
            raw = entry.get("raw", {}).get("mean")
            for system in systems:
                mean = entry[system]["mean"]
                entry[system]["vs_raw"] = mean / raw if raw and mean is not None and system != "raw" else None
            out.setdefault(size, {})[figure] = entry
    return out


def table(data: dict, markdown: bool = False) -> str:
    """The summary as text: per size, a row per figure and system, a column per clip, the mean
    of clips and the ratio to the raw model."""
    lines = []
    clips = data["clips"]
    for size, figures in data["summary"].items():
        head = ["figure", "system", *clips, "mean", "vs raw"]
        body = []
        for figure, entry in figures.items():
            fmt = FIGURES[figure][1]
            for system, values in entry.items():
                cells = [fmt.format(values["clips"].get(c)) if values["clips"].get(c) is not None else "-" for c in clips]
                mean = fmt.format(values["mean"]) if values["mean"] is not None else "-"
                ratio = f"{values['vs_raw']:.2f}x" if values.get("vs_raw") is not None else ""
                body.append([figure if system == data["systems"][0] else "", system, *cells, mean, ratio])
        title = f"{size}, {data['frames']} frames per clip (mask figures and cost: {data['effects'][0]})"
        if markdown:
            lines += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in body]
        else:
            widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
            lines += [title] + ["  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                                          for i, (c, w) in enumerate(zip(r, widths))) for r in [head, *body]]
        lines.append("")
    return "\n".join(lines)


def crop_boxes(alpha: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """Square crops (top, left, side) on the true edge: the top of the head (hair) and the
    shoulder on the picture's left."""
    h, w = alpha.shape
    side = h // 4
    mask = alpha >= 0.5
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return {}
    top = rows[0]
    head_x = int(np.flatnonzero(mask[min(top + side // 4, h - 1)]).mean())
    shoulder_y = int(top + 0.6 * (h - top))
    shoulder_x = int(np.flatnonzero(mask[shoulder_y])[0]) if mask[shoulder_y].any() else w // 4

    def box(cy: int, cx: int) -> tuple[int, int, int]:
        return int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side)), side

    return {"head": box(top + side // 4, head_x), "shoulder": box(shoulder_y, shoulder_x)}


def contact_sheet(sheets: dict[str, dict], systems: list[str], effects: list[str], tile: int = 160) -> np.ndarray:
    """RGB picture: a row per clip and effect, for each crop (head, shoulder) the ideal and each
    system's output side by side, labelled."""
    columns = ["ideal", *systems]
    label_h, label_w = 18, 120
    rows = []
    header = np.full((label_h, label_w + 2 * len(columns) * tile, 3), 255, np.uint8)
    for j, (crop, name) in enumerate((c, n) for c in ("head", "shoulder") for n in columns):
        cv2.putText(header, f"{crop}: {name}", (label_w + j * tile + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    rows.append(header)
    for clip, sheet in sheets.items():
        boxes = crop_boxes(sheet["alpha"])
        for effect in effects:
            row = np.full((tile, label_w, 3), 255, np.uint8)
            cv2.putText(row, clip, (4, tile // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            cv2.putText(row, effect, (4, tile // 2 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            cells = [row]
            for crop in ("head", "shoulder"):
                top, left, side = boxes[crop]
                for name in columns:
                    picture = sheet[effect][name][top : top + side, left : left + side]
                    cells.append(cv2.resize(np.clip(picture, 0, 255).astype(np.uint8), (tile, tile),
                                            interpolation=cv2.INTER_NEAREST if side < tile else cv2.INTER_AREA))
            rows.append(np.hstack(cells))
    return np.vstack(rows)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size like 640x480, not {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("width and height: even, at least 64")
    return w, h


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="camfx bench quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(640, 480), (1280, 720)])
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=CLIPS)
    parser.add_argument("--frames", type=int, default=120, help="frames per clip (the motion script scales to it)")
    parser.add_argument("--effects", nargs="+", default=list(EFFECTS), choices=EFFECTS)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.frames < 8:
        parser.error("--frames must be at least 8 (the motion script has four parts)")
    data = run(args.sizes, args.clips, args.frames, args.effects, sheets=args.out)
    print(table(data))
    print("wrote", write_json(args.out / "quality.json", data))
    (args.out / "quality.md").write_text(table(data, markdown=True))
    print("wrote", args.out / "quality.md")
    return 0
