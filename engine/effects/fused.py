"""The small-image steps of a clean composite (see `filters`) fused into a few numba loops.

Each of `filters.edge_colours`, `sure_weights`, `edge_correction` and the normalised blur of
`blurred` is a handful of float32 numpy passes over small images, each with a fresh temporary:
at 720p they cost more than the blend itself. Here each step reads its inputs once and writes
one result; OpenCV still does the box and stack blurs and the resizes (SIMD, hard to beat). The
arithmetic is the same as theirs, in float32, so results match theirs to rounding (asserted in
tests/unit/test_fused.py against those functions).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# C-contiguous arrays only: with their strides known the loops vectorise (several times faster).
_PLANE = "uint8[:, ::1]"
_PLANES = "uint8[:, :, ::1]"
_MAP = "float32[:, ::1]"
_MAPS = "float32[:, :, ::1]"


@njit(f"void({_PLANES}, {_MAP}, {_MAPS}, {_MAPS})", nogil=True, cache=True)
def weighted_colours(planes, alpha, person, background):
    """Per pixel, the sure weights (`filters.sure_weights`) and the planes weighted by them:
    person[..., :] = (w * Y, w * U, w * V, w) for the person's weight, background likewise."""
    height, width = alpha.shape
    for r in range(height):
        for c in range(width):
            a = alpha[r, c] * np.float32(2.0)
            p = min(max(a - np.float32(1.0), np.float32(0.0)), np.float32(1.0))
            b = min(max(np.float32(1.0) - a, np.float32(0.0)), np.float32(1.0))
            p *= p
            b *= b
            fy, fu, fv = np.float32(planes[0, r, c]), np.float32(planes[1, r, c]), np.float32(planes[2, r, c])
            person[r, c, 0] = fy * p
            person[r, c, 1] = fu * p
            person[r, c, 2] = fv * p
            person[r, c, 3] = p
            background[r, c, 0] = fy * b
            background[r, c, 1] = fu * b
            background[r, c, 2] = fv * b
            background[r, c, 3] = b


@njit(f"void({_MAPS}, {_MAPS}, float32, {_MAPS})", nogil=True, cache=True)
def colour_difference(person, background, sure, out):
    """F - B per plane from the box-blurred `weighted_colours`: each side's weighted mean, 0
    where either side's weight is below `sure` (as `filters.edge_colours`)."""
    height, width = out.shape[:2]
    for r in range(height):
        for c in range(width):
            ps, bs = person[r, c, 3], background[r, c, 3]
            if ps >= sure and bs >= sure:
                pk = np.float32(1.0) / max(ps, sure)
                bk = np.float32(1.0) / max(bs, sure)
                for k in range(3):
                    out[r, c, k] = person[r, c, k] * pk - background[r, c, k] * bk
            else:
                for k in range(3):
                    out[r, c, k] = np.float32(0.0)


@njit(f"void({_MAPS}, {_MAP}, {_PLANE}, {_PLANES})", nogil=True, cache=True)
def correction_offsets(colours, alpha, luma, chroma):
    """a * (1 - a) * (F - B) per plane offset by 128 into 8 bits (as `filters.composite` takes
    a correction): plane 0 into `luma`, planes 1 and 2 into `chroma[0]` and `chroma[1]`. Most
    of a mask is 0 or 1, where the offset is 128 whatever the colours: only the edge reads them."""
    height, width = alpha.shape
    for r in range(height):
        a_row, l_row, u_row, v_row = alpha[r], luma[r], chroma[0, r], chroma[1, r]
        for c in range(width):
            a = a_row[c]
            share = a * (np.float32(1.0) - a)
            if share == np.float32(0.0):
                l_row[c] = u_row[c] = v_row[c] = np.uint8(128)
                continue
            y = min(max(colours[r, c, 0] * share + np.float32(128.5), np.float32(0.0)), np.float32(255.0))
            u = min(max(colours[r, c, 1] * share + np.float32(128.5), np.float32(0.0)), np.float32(255.0))
            v = min(max(colours[r, c, 2] * share + np.float32(128.5), np.float32(0.0)), np.float32(255.0))
            l_row[c], u_row[c], v_row[c] = np.uint8(y), np.uint8(u), np.uint8(v)


@njit(f"void({_MAPS}, {_MAP}, {_MAPS})", nogil=True, cache=True)
def alpha_share(colours, alpha, out):
    """a * (F - B) per plane: the correction folded into a background layer (blur)."""
    height, width = alpha.shape
    for r in range(height):
        for c in range(width):
            a = alpha[r, c]
            for k in range(3):
                out[r, c, k] = colours[r, c, k] * a


@njit(f"void({_PLANES}, {_MAP}, {_MAPS})", nogil=True, cache=True)
def kept_planes(planes, kept, out):
    """out[..., k] = planes[k] * kept for each plane, out[..., -1] = kept: what the normalised
    blur blurs, in one image (one stack blur for all channels)."""
    count, height, width = planes.shape
    for r in range(height):
        w, o = kept[r], out[r]
        for c in range(width):
            o[c, count] = w[c]
        for k in range(count):
            p = planes[k, r]
            for c in range(width):
                o[c, k] = np.float32(p[c]) * w[c]


@njit(f"void({_PLANES}, {_MAPS}, float32, {_MAPS}, {_PLANES})", nogil=True, cache=True)
def normalised_finish(planes, blurred, fill, add, out):
    """(blur(I * w) + I * fill) / (blur(w) + fill) + add, rounded and clipped to 8 bits, per
    plane (as `filters.blurred` with `keep`); `add` has one channel per plane."""
    count, height, width = planes.shape
    total = np.empty(width, np.float32)
    for r in range(height):
        b, a = blurred[r], add[r]
        for c in range(width):
            total[c] = b[c, count] + fill
        for k in range(count):
            p, o = planes[k, r], out[k, r]
            for c in range(width):
                t = (b[c, k] + np.float32(p[c]) * fill) / total[c] + a[c, k]
                t = min(max(t + np.float32(0.5), np.float32(0.0)), np.float32(255.0))
                o[c] = np.uint8(t)


@njit(f"void({_MAP}, {_MAP}, {_MAP}, float32, float32, float32, float32, float32, {_MAP})", nogil=True, cache=True)
def smooth_and_steepen(alpha, previous, motion, still_levels, moving_levels, smoothing, edge_level, edge_gain, kept):
    """`mask.MaskRefiner`'s soft steps in one pass, in place on `alpha`: the previous mask kept
    by `smoothing` where `motion` (levels) is still, none where moving; the result into `kept`
    (the next frame's previous), then steepened about `edge_level` by `edge_gain` and clipped."""
    height, width = alpha.shape
    scale = np.float32(1.0) / (moving_levels - still_levels)
    for r in range(height):
        a, p, m, k = alpha[r], previous[r], motion[r], kept[r]
        for c in range(width):
            still = min(max((moving_levels - m[c]) * scale, np.float32(0.0)), np.float32(1.0))
            v = a[c] + still * smoothing * (p[c] - a[c])
            k[c] = v
            v = (v - edge_level) * edge_gain + np.float32(0.5)
            a[c] = min(max(v, np.float32(0.0)), np.float32(1.0))


@njit(f"void(uint8[:, :], {_PLANE}, int32[::1], int16[::1], int32[::1], int16[::1])", nogil=True, cache=True)
def add_offsets(out, offsets, x_source, x_weight, y_source, y_weight):
    """out += (offsets scaled to out's size) - 128, clipped to 0..255, only where the scaled map
    is not 128: a blend followed by this equals `blend.blend_plane_corrected` with the map
    scaled by OpenCV's bilinear resize, whose fixed-point arithmetic this repeats (11-bit
    weights; `x_source`, `x_weight` etc. from `resize_taps`). An edge correction is 128 but
    along the edge: only there is any work done."""
    height, width = offsets.shape
    out_height, out_width = out.shape
    # The first output column reading each source column (x_source is non-decreasing).
    first = np.full(width + 1, out_width, np.int32)
    for x in range(out_width - 1, -1, -1):
        first[x_source[x]] = x
    for c in range(width - 1, -1, -1):
        first[c] = min(first[c], first[c + 1])
    # Per source row, the output columns its non-128 runs reach, as sorted [start, end) spans.
    spans = np.empty((height, width + 1, 2), np.int32)
    counts = np.zeros(height, np.int32)
    for r in range(height):
        row = offsets[r]
        end = width
        while end > 0 and row[end - 1] == 128:  # most of a row is 128: find the rest's ends first
            end -= 1
        c = 0
        while c < end and row[c] == 128:
            c += 1
        n = 0
        while c < end:
            if row[c] != 128:
                start = c
                while c < end and row[c] != 128:
                    c += 1
                lo, hi = first[max(start - 1, 0)], first[c]  # taps (x_source, x_source + 1)
                if n > 0 and lo <= spans[r, n - 1, 1]:
                    spans[r, n - 1, 1] = hi
                else:
                    spans[r, n, 0] = lo
                    spans[r, n, 1] = hi
                    n += 1
            c += 1
        counts[r] = n
    for y in range(out_height):
        j0 = np.int64(y_source[y])
        j1 = min(j0 + 1, np.int64(height - 1))
        n0, n1 = counts[j0], counts[j1]
        if n0 + n1 == 0:
            continue
        b1 = np.int32(y_weight[y])
        b0 = np.int32(2048) - b1
        s0, s1 = offsets[j0], offsets[j1]
        o = out[y]
        k0 = k1 = 0
        done = 0
        while k0 < n0 or k1 < n1:  # the two rows' spans merged in order: no column twice
            if k1 >= n1 or (k0 < n0 and spans[j0, k0, 0] <= spans[j1, k1, 0]):
                lo, hi = spans[j0, k0, 0], spans[j0, k0, 1]
                k0 += 1
            else:
                lo, hi = spans[j1, k1, 0], spans[j1, k1, 1]
                k1 += 1
            for x in range(max(lo, done), hi):
                c0 = x_source[x]
                c1 = min(c0 + 1, width - 1)
                a1 = np.int32(x_weight[x])
                a0 = np.int32(2048) - a1
                h0 = np.int32(s0[c0]) * a0 + np.int32(s0[c1]) * a1
                h1 = np.int32(s1[c0]) * a0 + np.int32(s1[c1]) * a1
                v = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2
                t = np.int32(o[x]) + v - np.int32(128)
                o[x] = np.uint8(min(max(t, np.int32(0)), np.int32(255)))
            done = max(done, hi)


def resize_taps(source: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's bilinear taps from `source` pixels to `size`: each output pixel's first source
    pixel and the second's weight out of 2048 (borders clamped as OpenCV does)."""
    position = ((np.arange(size, dtype=np.float64) + 0.5) * (source / size) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int32)
    fraction = position - first
    low, high = first < 0, first >= source - 1
    first[low], fraction[low] = 0, 0.0
    first[high], fraction[high] = source - 1, 0.0
    return first, np.round(fraction * 2048).astype(np.int16)


@njit(f"void({_MAP}, {_MAP})", nogil=True, cache=True)
def background_weights(alpha, out):
    """`filters.sure_weights`' background half: clip(1 - 2a, 0, 1) squared."""
    height, width = alpha.shape
    for r in range(height):
        a, o = alpha[r], out[r]
        for c in range(width):
            b = min(max(np.float32(1.0) - a[c] * np.float32(2.0), np.float32(0.0)), np.float32(1.0))
            o[c] = b * b
