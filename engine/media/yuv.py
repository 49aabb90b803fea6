"""I420 frames as one ndarray, the layout PyAV's `to_ndarray(format="yuv420p")` gives:
shape (H * 3 // 2, W), the Y plane on top, then U, then V (each H/2 x W/2). A frame may also
be a tuple of the three planes, each its own array: views of a decoded frame's buffers, read
in place instead of copied (their rows may be padded). Everything here takes either form.

The engine works in the codec's own format: no colour conversion round trip, and half the
bytes of RGB to blur and blend.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

Frame = np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]  # one array, or its three planes


def frame_size(frame: Frame) -> tuple[int, int]:
    """(height, width) of the picture in an I420 frame."""
    if isinstance(frame, tuple):
        return frame[0].shape
    return frame.shape[0] * 2 // 3, frame.shape[1]


def planes(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes; writing to them writes the frame (a contiguous ndarray or
    torch tensor, or a tuple of planes).

    Sliced from the flat buffer: when H % 4 == 2 (480x270, say) a chroma plane does not fill
    whole rows of the (H * 3 // 2, W) array.
    """
    if isinstance(frame, tuple):
        return frame
    h, w = frame_size(frame)
    flat = frame.reshape(-1)
    luma, chroma = h * w, (h // 2) * (w // 2)
    return (
        flat[:luma].reshape(h, w),
        flat[luma : luma + chroma].reshape(h // 2, w // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(h // 2, w // 2),
    )


def empty(height: int, width: int) -> np.ndarray:
    return np.empty((height * 3 // 2, width), dtype=np.uint8)


def contiguous(frame: Frame) -> np.ndarray:
    """The frame as one (H * 3 // 2, W) array: itself if it is one, else a copy of its planes."""
    if not isinstance(frame, tuple):
        return frame
    out = empty(*frame_size(frame))
    for src, dst in zip(frame, planes(out)):
        dst[...] = src
    return out


def from_rgb(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def to_rgb(frame: Frame) -> np.ndarray:
    return cv2.cvtColor(contiguous(frame), cv2.COLOR_YUV2RGB_I420)


class PlaneHalvings:
    """One plane halved again and again (OpenCV's area resize is fast only at exactly 2x: 10-20x
    faster than at 4x, 5x or 2.5x), each level made once, on whichever thread asks first."""

    def __init__(self, plane: np.ndarray):
        self._levels = [plane]  # the plane, halved, halved twice, ...
        self._lock = threading.Lock()

    def shrink(self, height: int, width: int, dst: np.ndarray | None = None,
               region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The plane (or its `region`, (x0, y0, x1, y1)) area-averaged down to (height, width):
        halved while it stays at least that size, then bilinear for the rest, which at under 2x
        still reads every source pixel. A region is cut from the deepest level its corners
        fall on exactly (they are divisible by its 2 ** depth)."""
        x0, y0, x1, y1 = region or (0, 0, self._levels[0].shape[1], self._levels[0].shape[0])
        with self._lock:  # a second thread wanting a level waits for it rather than repeat it
            levels = self._levels
            depth = 0
            step = 2
            while ((y1 - y0) // step >= height and (x1 - x0) // step >= width
                   and (region is None or not (x0 % step or y0 % step or x1 % step or y1 % step))):
                depth += 1
                step *= 2
                if depth == len(levels):
                    above = levels[-1]
                    half = (above.shape[1] // 2, above.shape[0] // 2)
                    levels.append(cv2.resize(above, half, interpolation=cv2.INTER_AREA))
            plane = levels[depth]
        if region is not None:
            plane = plane[y0 >> depth: y1 >> depth, x0 >> depth: x1 >> depth]
        return cv2.resize(plane, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)


class Halvings:
    """A frame's three `PlaneHalvings`. The model input, the mask's guide and the blur all shrink
    the same frame: sharing one `Halvings` they read the full-size planes once between them,
    not once each."""

    def __init__(self, frame: Frame):
        self._planes = [PlaneHalvings(plane) for plane in planes(frame)]

    def shrink(self, index: int, height: int, width: int, dst: np.ndarray | None = None,
               region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Plane `index` (0 Y, 1 U, 2 V), or its part under `region` ((x0, y0, x1, y1) in luma
        pixels, even), area-averaged down to (height, width)."""
        if region is not None and index:
            region = tuple(c // 2 for c in region)
        return self._planes[index].shrink(height, width, dst, region)


def resize(
    frame: Frame, height: int, width: int, interpolation: int = cv2.INTER_AREA, halvings: Halvings | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Resize plane by plane (height and width must be even); shrinking uses `halvings` if given.
    `region`: only that part of the frame ((x0, y0, x1, y1), even; INTER_AREA only)."""
    out = empty(height, width)
    if interpolation == cv2.INTER_AREA:
        halvings = halvings or Halvings(frame)
        for i, dst in enumerate(planes(out)):
            halvings.shrink(i, *dst.shape, dst=dst, region=region)
    else:
        for src, dst in zip(planes(frame), planes(out)):
            cv2.resize(src, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=interpolation)
    return out


def colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (Y, U, V) of an RGB colour, converted exactly as frames are."""
    patch = cv2.cvtColor(np.full((2, 2, 3), rgb, dtype=np.uint8), cv2.COLOR_RGB2YUV_I420)
    return int(patch[0, 0]), int(patch[2, 0]), int(patch[2, 1])


def model_input(frame: Frame, height: int, width: int, halvings: Halvings | None = None,
                region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The frame (or its `region`, see `resize`) scaled to a model's input size as RGB uint8
    (scaled in I420: cheap)."""
    return to_rgb(resize(frame, height, width, halvings=halvings, region=region))
