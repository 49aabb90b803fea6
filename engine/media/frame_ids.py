"""Frame ids stamped into the top rows of a frame, readable after a lossy codec round trip.

With the `probe` param the server keeps the top 16 rows of each input in its output, so the
id read from an output frame names the input it was made from.
"""

from __future__ import annotations

import numpy as np

from . import yuv

BITS = 20  # ids wrap after about 9 hours at 30 fps
ROWS = 16
_DARK, _LIGHT = 32, 224


def stamp(frame: np.ndarray, frame_id: int) -> np.ndarray:
    """Write `frame_id` as BITS black/white blocks across the top ROWS luma rows (in place)."""
    luma, u, v = yuv.planes(frame)
    width = luma.shape[1]
    block = width // BITS
    for bit in range(BITS):
        luma[:ROWS, bit * block : (bit + 1) * block] = _LIGHT if (frame_id >> bit) & 1 else _DARK
    u[: ROWS // 2] = 128
    v[: ROWS // 2] = 128
    return frame


def read(frame: np.ndarray) -> int:
    """The id stamped in `frame` (block centres are read, away from codec-smeared edges)."""
    luma = yuv.planes(frame)[0]
    block = luma.shape[1] // BITS
    centre = luma[ROWS // 4 : 3 * ROWS // 4]
    value = 0
    for bit in range(BITS):
        mean = centre[:, bit * block + block // 4 : (bit + 1) * block - block // 4].mean()
        value |= int(mean > (_DARK + _LIGHT) / 2) << bit
    return value
