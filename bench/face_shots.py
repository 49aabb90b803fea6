"""Before / after pictures of the face stages, for the README: `python -m camfx.bench.face_shots DIR`.

Each PNG shows the same frame without (left) and with (right) one face setting, through the real
pipeline and models: the astronaut photograph (scikit-image) over the synthetic scene.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from camfx.engine.effects import filters as effects
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.media import yuv
from camfx.engine.params import Params
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import Work, default_pipeline

from .clip import portrait_over_scene

W, H = 1280, 720
HALF = 320  # each side's width in the saved picture


def _output(parts, frames, **params) -> np.ndarray:
    pipeline = default_pipeline(*parts)
    p = Params(**{"effect": "none", **params})
    work = None
    for frame in frames:
        work = pipeline.process(Work(image=frame, params=p))
    return yuv.to_rgb(work.output)


def _pair(left: np.ndarray, right: np.ndarray, crop: tuple[slice, slice] | None = None) -> np.ndarray:
    if crop is not None:
        left, right = left[crop], right[crop]
    height = round(left.shape[0] * HALF / left.shape[1])
    sides = [cv2.resize(s, (HALF, height), interpolation=cv2.INTER_AREA) for s in (left, right)]
    gap = np.full((height, 6, 3), 255, np.uint8)
    return np.hstack([sides[0], gap, sides[1]])


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/face")
    out.mkdir(parents=True, exist_ok=True)
    parts = (Segmenters(), Backgrounds())
    side = portrait_over_scene(W, H, [(0.06, 0.12)] * 60, 0.8)
    dim = portrait_over_scene(W, H, [(0.3, 0.1)] * 4, 0.8, brightness=0.55)
    dark = portrait_over_scene(W, H, [(0.3, 0.1)] * 4, 0.8, brightness=0.3)
    close = portrait_over_scene(W, H, [(0.3, -0.2)] * 4, 1.6)
    face = (slice(0, 420), slice(690, 1090))  # the close-up's face

    from matplotlib import cbook
    import matplotlib.image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = np.ascontiguousarray(matplotlib.image.imread(f, format="jpg")[..., :3])
    two = yuv.to_rgb(portrait_over_scene(W, H, [(0.32, 0.05)], 0.95)[0])
    two[H - 340:, 30:290] = cv2.resize(grace, (260, 340), interpolation=cv2.INTER_AREA)
    two_frames = [yuv.from_rgb(two)] * 3

    shots = {
        "framing_tight": _pair(yuv.to_rgb(side[-1]), _output(parts, side, framing="tight")),
        "light_studio": _pair(_output(parts, dim, effect="blur"), _output(parts, dim, effect="blur", light="studio")),
        "light_key": _pair(yuv.to_rgb(dim[-1]), _output(parts, dim, light="key")),
        "low_light": _pair(yuv.to_rgb(dark[-1]), _output(parts, dark, low_light=1.0, vignette=0.5)),
        "touch_up": _pair(yuv.to_rgb(close[-1]), _output(parts, close, touch_up=1.0), face),
        "toon_face": _pair(yuv.to_rgb(effects.toon(close[-1], 2, 0.6)), _output(parts, close, effect="toon"), face),
        "people_main": _pair(_output(parts, two_frames, effect="replace", background_image="office"),
                             _output(parts, two_frames, effect="replace", background_image="office", people="main")),
    }
    for name, rgb in shots.items():
        path = out / f"{name}.png"
        # 256 colours, dithered: a third of the bytes, and at this size the eye cannot tell.
        Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        print(path, f"{path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
