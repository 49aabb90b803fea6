"""A synthetic moving-person clip: a real portrait photograph sliding over a scene.

Used as the camera in benchmarks, tests and the browser's fake camera (as .y4m).
The portrait is Grace Hopper (US Navy photograph, public domain) that matplotlib ships.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from camfx.engine.media import yuv


def _portrait() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _scene(height: int, width: int) -> np.ndarray:
    """A textured indoor-looking backdrop (shelves and a window), RGB."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = np.stack([150 + 30 * np.sin(xx / 37.0), 140 + 20 * np.cos(yy / 23.0), 120 + 0 * xx], -1)
    scene = wall.astype(np.uint8)
    for i in range(6):  # shelves with "books"
        y = int(height * (0.15 + 0.13 * i))
        cv2.rectangle(scene, (0, y), (width // 3, y + height // 60), (90, 60, 40), -1)
        for j in range(12):
            x = j * width // 36
            colour = tuple(int(c) for c in np.random.default_rng(i * 12 + j).integers(40, 220, 3))
            cv2.rectangle(scene, (x, y - height // 12), (x + width // 40, y), colour, -1)
    cv2.rectangle(scene, (int(width * 0.65), int(height * 0.1)), (int(width * 0.95), int(height * 0.55)), (210, 230, 250), -1)
    return scene


def person_clip(
    width: int, height: int, frames: int = 60, whole_pixels: bool = False, scene: np.ndarray | None = None
) -> list[np.ndarray]:
    """`frames` I420 frames: the portrait swaying left and right over the scene and bobbing a
    little, looping smoothly.

    Positions are fractional, as a real person's are: a whole-pixel shift of a rigid picture
    lets a video encoder find exact matches, which makes the unprocessed stream unrealistically
    cheap to encode (about 1 ms a frame less for VP8 at 720p than any processed stream).
    `whole_pixels` makes that rigid clip, for comparison (`camfx bench encode --whole-pixels`).
    `scene`: another backdrop (RGB, any size: stretched to the frame) instead of the shelves.
    """
    portrait = _portrait()
    ph = int(height * 0.85)
    pw = int(portrait.shape[1] * ph / portrait.shape[0])
    portrait = cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA)
    scene = _scene(height, width) if scene is None else cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)
    clip = []
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        x = (width - pw) / 2 + np.sin(phase) * (width - pw) / 3
        y = height - ph + 0.005 * height * (1 - np.cos(2 * phase))  # down by up to 1% and back
        if whole_pixels:
            x, y = int(x), height - ph
        frame = scene.copy()
        shift = np.float32([[1, 0, x], [0, 1, y]])
        cv2.warpAffine(portrait, shift, (width, height), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
        clip.append(yuv.from_rgb(frame))
    return clip


def still_clip(width: int, height: int, frames: int = 60, noise: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """`frames` I420 frames of a person sitting still: the first frame of `person_clip` with
    fresh sensor-like noise (Gaussian, `noise` 8-bit levels) in every frame, the same each run."""
    still = yuv.to_rgb(person_clip(width, height, 1)[0]).astype(np.float32)
    rng = np.random.default_rng(seed)
    return [
        yuv.from_rgb(np.clip(still + rng.normal(0.0, noise, still.shape), 0, 255).astype(np.uint8))
        for _ in range(frames)
    ]


def write_y4m(path: Path, clip: list[np.ndarray], fps: int = 30) -> Path:
    """Write I420 frames as a YUV4MPEG2 file (Chromium's fake-camera format)."""
    h, w = yuv.frame_size(clip[0])
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in clip:
            f.write(b"FRAME\n")
            f.write(frame.tobytes())
    return Path(path)



def astronaut_rgb() -> np.ndarray:
    """scikit-image's astronaut photograph (Eileen Collins, NASA, public domain), RGB."""
    from skimage import data

    return data.astronaut()


def portrait_over_scene(width: int, height: int, offsets: list[tuple[float, float]], portrait_height: float = 0.9,
                        portrait: np.ndarray | None = None, brightness: float = 1.0) -> list[np.ndarray]:
    """I420 frames of a portrait (default: the astronaut) placed over the scene, its top-left
    corner at each (x, y) of `offsets` (fractions of the frame), scaled to `portrait_height` of
    the frame's height and its brightness multiplied by `brightness`. Scripted motion for
    tests of what follows a face; positions are fractional, as a real person's are."""
    portrait = astronaut_rgb() if portrait is None else portrait
    ph = int(height * portrait_height)
    pw = int(portrait.shape[1] * ph / portrait.shape[0])
    portrait = cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA)
    scene = _scene(height, width)
    if brightness != 1.0:
        portrait = cv2.convertScaleAbs(portrait, alpha=brightness)
        scene = cv2.convertScaleAbs(scene, alpha=brightness)
    frames = []
    for fx, fy in offsets:
        frame = scene.copy()
        shift = np.float32([[1, 0, fx * width], [0, 1, fy * height]])
        cv2.warpAffine(portrait, shift, (width, height), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
        frames.append(yuv.from_rgb(frame))
    return frames
