"""Makes bench/groundtruth/, the frozen ground truth of `camfx bench quality`: run once, by
hand, and commit the result (the benchmark itself only reads the files). Their sources and
licences are in bench/groundtruth/NOTICE.

The person is Eileen Collins in scikit-image's `astronaut()` (NASA, public domain), cropped above
the helmet she holds. Her matte: the bundled general selfie model (averaged over the picture and
its mirror image) gives a trimap (sure person, sure background and a band of unknown between),
closed-form matting (Levin et al. 2008, pymatting) solves alpha in the band from the picture's
colours, and pymatting's multi-level foreground estimation takes the old backdrop's colour out of
the edge pixels, so compositing the PNG over a new background leaves no grey studio rim.

The backgrounds are scikit-image pictures too, stored as JPEG: a busy night launch pad
(`rocket`), a dark star field close to her black collar and turtleneck (`hubble_deep_field`),
high-frequency gravel (`gravel`) and a warm wooden table with the white rim of a cup (the right
part of `coffee`).

    python -m camfx.bench.make_groundtruth [--out bench/groundtruth] [--band 10]

Needs pymatting and scikit-image (not needed to run the benchmark).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from camfx.engine import yuv
from camfx.engine.segmenter import Segmenters

# name -> (scikit-image picture, (top, bottom, left, right) crop). The table is cropped to the
# cup's right side: whole, the cup is twice the size of her head and the scene reads as no room.
BACKGROUNDS = {
    "busy": ("rocket", None),
    "dark": ("hubble_deep_field", None),
    "gravel": ("gravel", None),
    "table": ("coffee", (0, 330, 300, 600)),
}
CROP_ROWS = 336  # the helmet she holds starts below this row
# The model takes the pale backdrop between her right arm and the shuttle's black stand for part
# of her: below this row and right of this column is background (checked by eye).
STAND_ROW, STAND_COL = 240, 368


def model_probability(rgb: np.ndarray) -> np.ndarray:
    """The general model's person probability at the picture's size, mean of it and its mirror."""
    seg = Segmenters().get("general")
    h, w = rgb.shape[:2]
    probs = []
    for flip in (False, True):
        img = rgb[:, ::-1] if flip else rgb
        p = seg(yuv.from_rgb(np.ascontiguousarray(img)))
        p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
        probs.append(p[:, ::-1] if flip else p)
    return np.mean(probs, axis=0)


def trimap(probability: np.ndarray, band: int) -> np.ndarray:
    """1 sure person, 0 sure background, 0.5 unknown: `band` px either side of the model's edge."""
    person = (probability >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    sure = cv2.erode(person, kernel)
    maybe = cv2.dilate(person, kernel)
    out = np.full(person.shape, 0.5)
    out[sure == 1] = 1.0
    out[maybe == 0] = 0.0
    return out


def make(band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGBA uint8 person, trimap, the photo) for the cropped astronaut."""
    from pymatting import estimate_alpha_cf, estimate_foreground_ml
    from skimage import data

    rgb = data.astronaut()
    tri = trimap(model_probability(rgb), band)
    tri[STAND_ROW:, STAND_COL:] = 0.0
    rgb, tri = rgb[:CROP_ROWS], tri[:CROP_ROWS]
    image = rgb.astype(np.float64) / 255.0
    alpha = np.clip(estimate_alpha_cf(image, tri), 0.0, 1.0)
    alpha[alpha < 0.01] = 0.0  # the solver's near-zero dust in the backdrop
    alpha[alpha > 0.99] = 1.0
    foreground = estimate_foreground_ml(image, alpha)
    rgba = np.dstack([np.clip(foreground * 255.0 + 0.5, 0, 255), alpha * 255.0 + 0.5]).astype(np.uint8)
    cols = np.flatnonzero(rgba[..., 3].any(axis=0))  # crop the empty sides, keep a margin
    left, right = max(0, cols[0] - 8), min(rgba.shape[1], cols[-1] + 9)
    return rgba[:, left:right], tri[:, left:right], rgb[:, left:right]


def write_backgrounds(out: Path) -> None:
    from skimage import data

    for name, (source, crop) in BACKGROUNDS.items():
        image = getattr(data, source)()
        if crop is not None:
            top, bottom, left, right = crop
            image = image[top:bottom, left:right]
        bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(out / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m camfx.bench.make_groundtruth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/groundtruth"))
    parser.add_argument("--band", type=int, default=10, help="trimap's unknown band, px either side of the model's edge")
    parser.add_argument("--debug", type=Path, help="also write the trimap and the matte over grey here")
    args = parser.parse_args(argv)
    rgba, tri, rgb = make(args.band)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "person.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    write_backgrounds(args.out)
    if args.debug:
        args.debug.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.debug / "trimap.png"), (tri * 255).astype(np.uint8))
        a = rgba[..., 3:].astype(np.float32) / 255.0
        for name, colour in (("over_green", (0, 255, 0)), ("over_black", (0, 0, 0)), ("over_white", (255, 255, 255))):
            over = rgba[..., :3] * a + np.array(colour, np.float32) * (1 - a)
            cv2.imwrite(str(args.debug / f"{name}.png"), cv2.cvtColor(over.astype(np.uint8), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(args.debug / "alpha.png"), rgba[..., 3])
    print(f"wrote {args.out}: person.png ({rgba.shape[1]}x{rgba.shape[0]}), alpha: {np.mean(rgba[..., 3] == 255):.3f} opaque, "
          f"{np.mean((rgba[..., 3] > 0) & (rgba[..., 3] < 255)):.3f} partial")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
