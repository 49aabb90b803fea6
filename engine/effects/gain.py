"""A plane multiplied by a smooth gain map, in a single pass compiled by numba (and the chroma
planes' distance from grey, for a gain that should light a colour, not pale it).

A gain made small (light varies slowly) used to be scaled up to the plane's size and then
multiplied in: two full-size passes and a full-size temporary. Here the map arrives already
stretched to the plane's width (a cheap resize of a few dozen rows); each output row blends its
two nearest map rows and multiplies, in 16-bit lanes, reading the plane once and writing it once.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from numba import njit

ONE = 64  # fixed point: gain * ONE, in uint8 (gains up to ~4x)


@njit("void(uint8[:, :], uint8[:, :], int32[:], uint16[:])", nogil=True, cache=True)
def _multiply_rows(plane, gain, rows, weights):
    """plane[y] = min(255, round(plane[y] * g / ONE)), in place, g = the map rows rows[y] and
    rows[y] + 1 mixed as (256 - weights[y]) : weights[y]. Releases the GIL."""
    height, width = plane.shape
    last = gain.shape[0] - 1
    for y in range(height):
        f = weights[y]
        keep = np.uint16(256 - f)
        a, b, p = gain[rows[y]], gain[min(rows[y] + 1, last)], plane[y]
        for x in range(width):
            # Each sum cast to 16 bits before it is shifted (every one fits): the loop then runs
            # in 16-bit vector lanes, not 64-bit ones.
            mixed = np.uint16(np.uint16(a[x]) * keep + np.uint16(b[x]) * f + np.uint16(128))
            g = np.uint16(mixed >> np.uint16(8))
            v = np.uint16(np.uint16(p[x]) * g + np.uint16(32))
            v = np.uint16(v >> np.uint16(6))
            p[x] = np.uint8(min(v, np.uint16(255)))


@njit(inline="always")
def _scale_chroma_row(a, b, keep, f, row):
    """row = 128 + (row - 128) * g / ONE (clipped to 0..255), g = the map rows a and b mixed as
    keep : f. Unsigned 16-bit lanes throughout: c * g / ONE + 128 - 128 * g / ONE, the last
    term taken off no further than to 0 (every sum fits: 255 * 255 + 32 < 2 ** 16)."""
    for x in range(row.shape[0]):
        g = np.uint16(np.uint16(a[x]) * keep + np.uint16(b[x]) * f + np.uint16(128)) >> np.uint16(8)
        t = np.uint16((np.uint16(np.uint16(row[x]) * g + np.uint16(32)) >> np.uint16(6)) + np.uint16(128))
        t = np.uint16(t - min(t, np.uint16(g << np.uint16(1))))  # 128 * g / ONE = 2 g
        row[x] = np.uint8(min(t, np.uint16(255)))


@njit("void(uint8[:, :], uint8[:, :], uint8[:, :], int32[:], uint16[:])", nogil=True, cache=True)
def _scale_chroma_rows(u, v, gain, rows, weights):
    """The chroma planes' distance from grey times the map (rows mixed as `_multiply_rows`
    mixes them), in place. Releases the GIL."""
    last = gain.shape[0] - 1
    for y in range(u.shape[0]):
        f = weights[y]
        a, b, keep = gain[rows[y]], gain[min(rows[y] + 1, last)], np.uint16(256 - f)
        _scale_chroma_row(a, b, keep, f, u[y])
        _scale_chroma_row(a, b, keep, f, v[y])


def multiply(plane: np.ndarray, fixed: np.ndarray) -> None:
    """plane *= `fixed` / ONE, in place, `fixed` (uint8) scaled bilinearly to the plane's size
    (pixel centres aligned, as cv2.resize does): `plane` may be a strided view."""
    apply(plane, stretch(fixed, *plane.shape))


def stretch(fixed: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What `multiply` works out from the map for a (height, width) plane: the map stretched
    across it, and each plane row's pair of map rows and their mix. `apply` then multiplies; a
    map that stays the same is stretched once."""
    gh, gw = fixed.shape
    # Stretched across first (a few dozen rows): warpAffine's bilinear is ~2.5x cv2.resize's here.
    across = np.float32([[gw / width, 0, 0.5 * gw / width - 0.5], [0, 1, 0]])
    stretched = cv2.warpAffine(fixed, across, (width, gh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
    return (stretched, *_row_mix(gh, height))


@functools.lru_cache(maxsize=64)
def _row_mix(rows: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of `height` plane rows' first map row (of `rows`) and the next one's share in 256ths
    (pixel centres aligned, as cv2.resize does); kept (the same for every frame), never written."""
    source = np.clip((np.arange(height, dtype=np.float32) + 0.5) * (rows / height) - 0.5, 0, rows - 1)
    first = source.astype(np.int32)
    weights = np.round((source - first) * 256).astype(np.uint16)
    return first, weights


def apply(plane: np.ndarray, stretched: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """plane *= the map `stretch` made for the plane's shape, in place."""
    _multiply_rows(plane, *stretched)


def apply_chroma(u: np.ndarray, v: np.ndarray, stretched: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """The chroma planes' distance from grey times the map `stretch` made for their shape, in
    place: with the luma multiplied by the same map, every colour's RGB is (so a lit colour
    keeps its saturation, as more light on it would)."""
    _scale_chroma_rows(u, v, *stretched)
