"""`camfx export backgrounds`: draw the bundled backgrounds (ours to license: every pixel is
drawn here with OpenCV and numpy, from a fixed seed).

    office   a bright room out of focus: a window with trees, a bookshelf, a plant, a lamp
    library  a wall of books in warm lamplight, out of focus
    lights   a 4 s loop of out-of-focus city lights drifting (VP9 WebM): a video background

Each is drawn sharp at twice the size, then blurred as a camera focused on a person in front
would see it (the farther, the softer), then given a little grain so JPEG keeps the gradients
smooth. `studio` and `sunset` are kept as they are.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import cv2
import numpy as np

W, H = 1280, 720
S = 2  # drawn at twice the size, for smooth edges once scaled down


def _canvas(colour) -> np.ndarray:
    out = np.empty((H * S, W * S, 3), np.float32)
    out[...] = colour
    return out


def _p(*xy: float) -> tuple[int, ...]:
    return tuple(int(round(v * S)) for v in xy)


def _rect(img, x0, y0, x1, y1, colour) -> None:
    cv2.rectangle(img, _p(x0, y0), _p(x1, y1), colour, -1, cv2.LINE_AA)


def _vertical(img, x0, y0, x1, y1, top, bottom) -> None:
    """A rectangle shaded from `top` to `bottom` colour."""
    x0, y0, x1, y1 = _p(x0, y0, x1, y1)
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    img[y0:y1, x0:x1] = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t


def _glow(img, cx, cy, radius, colour, strength) -> None:
    """Light added around (cx, cy), falling off smoothly."""
    ys, xs = np.mgrid[0 : H * S, 0 : W * S].astype(np.float32)
    d2 = ((xs - cx * S) ** 2 + (ys - cy * S) ** 2) / (radius * S) ** 2
    img += np.exp(-d2)[..., None] * np.asarray(colour, np.float32) * strength


def _books(img, rng, x0, x1, base_y, max_h, palette) -> None:
    """A row of book spines standing on a shelf at `base_y`, the odd one leaning."""
    x = x0 + rng.uniform(2, 10)
    while x < x1 - 8:
        width = rng.uniform(9, 22)
        height = max_h * rng.uniform(0.72, 0.97)
        colour = np.asarray(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.75, 1.1)
        if rng.random() < 0.05 and x + height < x1:  # a stack lying flat
            top = base_y
            for _ in range(rng.integers(3, 7)):
                thick, length = rng.uniform(7, 12), height * rng.uniform(0.8, 1.0)
                shade = np.asarray(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.75, 1.1)
                _rect(img, x + (height - length) / 2, top - thick, x + (height + length) / 2, top, shade.tolist())
                top -= thick + 0.5
            x += height + rng.uniform(1, 4)
            continue
        _rect(img, x, base_y - height, x + width, base_y, colour.tolist())
        band = rng.uniform(0.15, 0.3)  # a lighter band across the spine, where a title would be
        _rect(img, x + 1.5, base_y - height * (1 - band), x + width - 1.5, base_y - height * (1 - band) + 5,
              (colour * 1.35).clip(0, 255).tolist())
        x += width + rng.uniform(0.5, 2.5)
        if rng.random() < 0.06:
            x += rng.uniform(12, 40)  # a gap


def _shelf(img, rng, x0, y0, x1, y1, rows, wood, palette) -> None:
    _rect(img, x0 - 10, y0 - 14, x1 + 10, y1, [c * 0.7 for c in wood])
    _rect(img, x0, y0, x1, y1 - 10, [c * 0.45 for c in wood])  # the dark inside
    step = (y1 - y0) / rows
    for i in range(rows):
        base = y0 + step * (i + 1) - 10
        _books(img, rng, x0 + 4, x1 - 4, base, step - 22, palette)
        _rect(img, x0 - 4, base, x1 + 4, base + 10, wood)  # the board
        _rect(img, x0 - 4, base + 10, x1 + 4, base + 13, [c * 0.55 for c in wood])  # its shadow


def _leaves(img, rng, cx, cy, count, spread, greens) -> None:
    for _ in range(count):
        angle = rng.uniform(-math.pi * 0.95, -math.pi * 0.05)
        length = math.sqrt(rng.uniform(0.05, 1.0)) * spread
        x, y = cx + math.cos(angle) * length, cy + math.sin(angle) * length * 1.1
        axes = _p(rng.uniform(16, 34), rng.uniform(6, 11))
        colour = np.asarray(greens[rng.integers(len(greens))], np.float32) * rng.uniform(0.8, 1.15)
        cv2.ellipse(img, _p(x, y), axes, math.degrees(angle) + rng.uniform(-25, 25), 0, 360,
                    colour.tolist(), -1, cv2.LINE_AA)


def _finish(img: np.ndarray, far: np.ndarray | None, sigma_near: float, sigma_far: float, seed: int) -> np.ndarray:
    """Out of focus (more where `far` is 1), down to size, a vignette and grain."""
    near = cv2.GaussianBlur(img, (0, 0), sigma_near * S)
    if far is not None:
        distant = cv2.GaussianBlur(img, (0, 0), sigma_far * S)
        weight = cv2.GaussianBlur(far, (0, 0), 8 * S)[..., None]
        near = near * (1 - weight) + distant * weight
    out = cv2.resize(near, (W, H), interpolation=cv2.INTER_AREA)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xs - W / 2) / (W / 2)) ** 2 + ((ys - H / 2) / (H / 2)) ** 2
    out *= (1.0 - 0.22 * r2)[..., None]
    out += np.random.default_rng(seed).normal(0.0, 1.6, out.shape).astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


def office() -> np.ndarray:
    """A bright room: window light from the left, a bookshelf on the right, a plant, a lamp."""
    rng = np.random.default_rng(7)
    wall = (196, 200, 204)  # BGR: a warm grey wall
    img = _canvas(wall)
    far = np.zeros((H * S, W * S), np.float32)
    _vertical(img, 0, 0, W, 560, (202, 206, 212), (176, 182, 190))
    # Window: a bright sky and a far line of trees, seen through the frame and its bars.
    wx0, wy0, wx1, wy1 = 70, 70, 560, 470
    view = _canvas((0, 0, 0))
    _vertical(view, wx0, wy0, wx1, wy1, (250, 236, 214), (238, 240, 236))
    for _ in range(90):
        x = rng.uniform(wx0 - 20, wx1 + 20)
        crown = wy0 + 175 + 25 * math.sin(x / 45.0) + 15 * math.sin(x / 17.0)  # an uneven line of trees
        y = rng.uniform(crown, wy1 + 40)
        green = np.asarray((70, 150, 110), np.float32) * rng.uniform(0.7, 1.2)
        cv2.circle(view, _p(x, y), int(rng.uniform(25, 60) * S), green.tolist(), -1, cv2.LINE_AA)
    window = np.s_[_p(wy0)[0] : _p(wy1)[0], _p(wx0)[0] : _p(wx1)[0]]
    img[window] = view[window]
    far[window] = 1.0
    frame = (235, 238, 240)
    for x in (wx0, (wx0 + wx1) / 2, wx1):
        _rect(img, x - 7, wy0 - 7, x + 7, wy1 + 7, frame)
    for y in (wy0, wy0 + (wy1 - wy0) * 0.42, wy1):
        _rect(img, wx0 - 7, y - 7, wx1 + 7, y + 7, frame)
    _rect(img, wx0 - 20, wy1 + 7, wx1 + 20, wy1 + 20, (222, 226, 230))  # the sill
    # The floor, pale oak, and the skirting.
    _vertical(img, 0, 560, W, H, (120, 158, 190), (92, 124, 154))
    for x in np.arange(-400, W + 400, 95):
        cv2.line(img, _p(W / 2 + (x - W / 2) * 0.35, 560), _p(x, H), (100, 135, 165), 2 * S, cv2.LINE_AA)
    _rect(img, 0, 552, W, 562, (226, 229, 232))
    # Bookshelf on the right: white, filled with books in muted colours.
    palette = [(70, 80, 150), (150, 110, 60), (60, 110, 80), (190, 190, 185), (60, 140, 190), (120, 70, 70),
               (50, 60, 70), (160, 150, 120), (90, 130, 170), (40, 90, 160)]
    _shelf(img, rng, 860, 110, 1230, 600, 4, (222, 226, 230), palette)
    _glow(img, 300, 640, 260, (40, 40, 40), 0.5)  # the window's light on the floor
    # A tall plant in a pot between window and shelf.
    cv2.ellipse(img, _p(700, 548), _p(58, 12), 0, 0, 360, (70, 80, 90), -1, cv2.LINE_AA)
    _vertical(img, 650, 450, 750, 550, (60, 80, 110), (40, 55, 78))  # a terracotta pot
    _leaves(img, rng, 700, 450, 120, 150, [(60, 120, 70), (50, 140, 90), (40, 100, 60), (80, 150, 100)])
    # A pendant lamp and its warm light.
    cv2.line(img, _p(1010, 0), _p(1010, 60), (60, 60, 60), 2 * S, cv2.LINE_AA)
    cv2.ellipse(img, _p(1010, 78), _p(46, 26), 0, 180, 360, (40, 45, 50), -1, cv2.LINE_AA)
    _glow(img, 1010, 95, 180, (120, 190, 255), 0.35)
    _glow(img, 300, 260, 420, (60, 50, 30), 0.45)  # daylight spilling in
    return _finish(img, far, 4.5, 9.0, seed=1)


def library() -> np.ndarray:
    """A wall of books in warm lamplight."""
    rng = np.random.default_rng(11)
    img = _canvas((40, 52, 66))
    palette = [(40, 50, 120), (30, 80, 60), (110, 60, 40), (50, 110, 150), (30, 40, 60), (90, 100, 110),
               (40, 70, 110), (70, 120, 140), (120, 110, 90), (20, 30, 90)]
    wood = (40, 70, 105)
    for x0, x1 in ((20, 420), (440, 840), (860, 1260)):
        _shelf(img, rng, x0, 30, x1, 700, 5, wood, palette)
    _glow(img, 330, 430, 260, (90, 170, 255), 0.55)  # a reading lamp's pool of light
    _glow(img, 1000, 160, 320, (60, 120, 200), 0.3)
    img *= 0.92
    return _finish(img, None, 5.0, 5.0, seed=2)


def _bokeh_disc(radius: float) -> np.ndarray:
    """An out-of-focus point light: a soft-edged disc, a little brighter at its rim (float, 0..1)."""
    size = int(math.ceil(radius + 3))
    ys, xs = np.mgrid[-size : size + 1, -size : size + 1].astype(np.float32)
    r = np.sqrt(xs * xs + ys * ys) / radius
    disc = np.clip((1.0 - r) * radius / 1.5, 0.0, 1.0)  # 1.5 px of soft edge
    return disc * (0.75 + 0.25 * r**4)


def _add(canvas: np.ndarray, sprite: np.ndarray, cx: float, cy: float, colour: np.ndarray) -> None:
    """Add light: `sprite` x `colour` centred on (cx, cy), clipped to the canvas."""
    half = sprite.shape[0] // 2
    x0, y0 = int(round(cx)) - half, int(round(cy)) - half
    h, w = canvas.shape[:2]
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(sprite.shape[1], w - x0), min(sprite.shape[0], h - y0)
    if sx1 > sx0 and sy1 > sy0:
        canvas[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1] += sprite[sy0:sy1, sx0:sx1, None] * colour


def lights(seconds: float = 4.0, fps: int = 24, width: int = 640, height: int = 360) -> bytes:
    """Out-of-focus city lights drifting at dusk, a seamless loop (VP9 WebM)."""
    import av

    rng = np.random.default_rng(5)
    frames = int(seconds * fps)
    count = 70
    base_x, base_y = rng.uniform(-0.05, 1.05, count), rng.uniform(0.15, 1.0, count) ** 0.8
    radius = rng.uniform(0.025, 0.085, count) * height
    # BGR: sodium amber, warm white, a few cool whites and teal signs.
    tints = np.asarray([(40, 150, 255), (90, 190, 255), (170, 215, 255), (255, 225, 190), (200, 210, 90)], np.float32)
    colours = tints[rng.choice(len(tints), size=count, p=[0.35, 0.3, 0.15, 0.12, 0.08])] * rng.uniform(0.25, 0.6,
                                                                                                      (count, 1))
    sprites = [_bokeh_disc(r) for r in radius]
    # Each light drifts on a closed path, whole turns per loop: the last frame leads into the first.
    turns, phase = rng.integers(1, 3, count), rng.uniform(0, 2 * math.pi, count)
    amp_x, amp_y = rng.uniform(0.01, 0.04, count), rng.uniform(0.005, 0.02, count)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = np.broadcast_to((1 - t) * np.asarray((60, 28, 22), np.float32) + t * np.asarray((48, 30, 42), np.float32),
                          (height, width, 3))
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "34", "b:v": "0", "row-mt": "1"}
        for i in range(frames):
            angle = 2 * math.pi * i / frames
            picture = sky.copy()
            for k in range(count):
                x = (base_x[k] + amp_x[k] * math.sin(turns[k] * angle + phase[k])) * width
                y = (base_y[k] + amp_y[k] * math.cos(turns[k] * angle + phase[k])) * height
                pulse = 0.85 + 0.15 * math.sin(turns[k] * angle + 2 * phase[k])
                _add(picture, sprites[k], x, y, colours[k] * pulse)
            rgb = cv2.cvtColor(picture.clip(0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="camfx export backgrounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "demo" / "backgrounds",
                        help="folder to write office.jpg, library.jpg and lights.webm to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("office", office), ("library", library)):
        cv2.imwrite(str(args.out / f"{name}.jpg"), draw(), [cv2.IMWRITE_JPEG_QUALITY, 88])
    (args.out / "lights.webm").write_bytes(lights())
    for name in ("office.jpg", "library.jpg", "lights.webm"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
