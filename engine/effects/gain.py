"""A plane multiplied by a smooth gain map, in a single pass compiled by numba.

A gain made small (light varies slowly) used to be scaled up to the plane's size and then
multiplied in: two full-size passes and a full-size temporary. Here the map arrives already
stretched to the plane's width (a cheap resize of a few dozen rows); each output row blends its
two nearest map rows and multiplies, in 16-bit lanes, reading the plane once and writing it once.
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

ONE = 64  # fixed point: gain * ONE, in uint8 (gains up to ~4x)


@njit("void(uint8[:, :], uint8[:, :], int32[:], uint16[:], uint8[:, :])", nogil=True, cache=True)
def _multiply_rows(plane, gain, rows, weights, out):
    """out[y] = min(255, round(plane[y] * g / ONE)), g = the map rows rows[y] and rows[y] + 1
    mixed as (256 - weights[y]) : weights[y]. `out` must not overlap the inputs (the loop
    vectorises only then). Releases the GIL."""
    height, width = plane.shape
    last = gain.shape[0] - 1
    for y in range(height):
        f = weights[y]
        keep = np.uint16(256 - f)
        a, b, p, o = gain[rows[y]], gain[min(rows[y] + 1, last)], plane[y], out[y]
        for x in range(width):
            g = np.uint16((np.uint16(a[x]) * keep + np.uint16(b[x]) * f + np.uint16(128)) >> np.uint16(8))
            v = np.uint16((np.uint16(p[x]) * g + np.uint16(32)) >> np.uint16(6))
            o[x] = np.uint8(min(v, np.uint16(255)))


def multiply(plane: np.ndarray, fixed: np.ndarray) -> None:
    """plane *= `fixed` / ONE, in place, `fixed` (uint8) scaled bilinearly to the plane's size
    (pixel centres aligned, as cv2.resize does): `plane` may be a strided view."""
    height, width = plane.shape
    stretched = cv2.resize(fixed, (width, fixed.shape[0]), interpolation=cv2.INTER_LINEAR)
    source = np.clip((np.arange(height, dtype=np.float32) + 0.5) * (fixed.shape[0] / height) - 0.5,
                     0, fixed.shape[0] - 1)
    rows = source.astype(np.int32)
    weights = np.round((source - rows) * 256).astype(np.uint16)
    out = np.empty_like(plane, order="C")
    _multiply_rows(plane, stretched, rows, weights, out)
    plane[...] = out
