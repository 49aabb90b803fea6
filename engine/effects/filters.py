"""Effects on I420 frames (see `yuv`). Pure functions of ndarrays: no WebRTC, no state."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from ..media import yuv
from ..media.scale import resize_linear
from . import fused
from .blend import blend_plane, blend_plane_corrected, blend_plane_lit


@functools.lru_cache(maxsize=32)
def _taps(source: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return fused.resize_taps(source, size)


MIN_SHRUNK_SIGMA = 1.6  # the blur's spread, in pixels of the shrunken plane, at the least: its
                        # bilinear scale-up then passes e^-12 at that plane's Nyquist, so no steps show


def blur_shrink(sigma: float) -> int:
    """How far (1, 2, 4 or 8) a plane is shrunk before a blur that spreads `sigma` of its pixels."""
    return pow2_factor(sigma / MIN_SHRUNK_SIGMA)


def pow2_factor(limit: float) -> int:
    """The largest of 1, 2, 4, 8 not above `limit`: OpenCV's area resize is fast at these."""
    factor = 1
    while factor * 2 <= min(limit, 8):
        factor *= 2
    return factor


def composite(
    foreground: yuv.Frame,
    background: yuv.Frame,
    alpha: np.ndarray,
    correction: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    offsets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    background_light: float = 1.0,
    foreground_shift: tuple[int, int] = (0, 0),
    background_shift: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """foreground * alpha + background * (1 - alpha), plane by plane.

    `alpha` is float32 in [0, 1] at any resolution; it is scaled once for luma and once for
    the half-size chroma planes, as 8-bit weights (the result is within 1 of the exact blend,
    and exact where alpha is 0 or 1), and each plane is blended in one pass (see `blend`).
    `correction`: three float32 maps at any size (e.g. `edge_correction`'s), added per plane in
    the same pass, within one level. `offsets`: the correction already offset by 128 into 8 bits
    (see `correction_offsets`): the three planes' maps, at any size, scaled as OpenCV's bilinear
    resize would (within one level, rarely). Light, in the same pass: `background_light` (0..1)
    scales the background's luma as it is blended in (Studio Light's dimmer room, at the mask's
    own detail), and `foreground_shift` and `background_shift` move each side's U and V by whole
    levels (white balance: of both for a blurred room, of the person alone over a new picture).
    """
    h, w = yuv.frame_size(foreground)
    if yuv.frame_size(background) != (h, w):
        raise ValueError(f"background is {yuv.frame_size(background)}, foreground {(h, w)}")
    out = yuv.empty(h, w)
    alpha8 = cv2.convertScaleAbs(alpha, alpha=255.0)
    luma_weight = resize_linear(alpha8, w, h)
    chroma_weight = resize_linear(alpha8, w // 2, h // 2)
    dim = min(256, max(0, round(background_light * 256)))
    shifts, background_shifts = (0, *foreground_shift), (0, *background_shift)
    for i, (f, b, o) in enumerate(zip(yuv.planes(foreground), yuv.planes(background), yuv.planes(out))):
        weight = luma_weight if i == 0 else chroma_weight
        scale = dim if i == 0 else 256
        if correction is not None and offsets is None:
            # Offset by 128 into 8 bits while small, then scaled (8-bit resizes are fast).
            offset = np.clip(correction[i] + np.float32(128.5), 0.0, 255.0).astype(np.uint8)
            offset = cv2.resize(offset, (o.shape[1], o.shape[0]), interpolation=cv2.INTER_LINEAR)  # as add_offsets
            f = _shifted(f, shifts[i])
            b = _shifted(cv2.convertScaleAbs(b, alpha=scale / 256) if scale < 256 else b, background_shifts[i])
            blend_plane_corrected(f, b, weight, offset, o)
            continue
        if scale < 256 or shifts[i] or background_shifts[i]:
            blend_plane_lit(f, b, weight, scale, shifts[i], background_shifts[i], o)
        else:
            blend_plane(f, b, weight, o)
        if offsets is not None:
            # The correction is 128 (none) but along the edge: added there only, after the blend.
            fused.add_offsets(o, offsets[i], *_taps(offsets[i].shape[1], o.shape[1]), *_taps(offsets[i].shape[0], o.shape[0]))
    return out


def _shifted(plane: np.ndarray, levels: int) -> np.ndarray:
    """`plane` + `levels`, clipped (a new array unless `levels` is 0)."""
    if levels > 0:
        return cv2.add(plane, levels)
    return cv2.subtract(plane, -levels) if levels < 0 else plane


# Edge colour: a pixel on the person's edge is a mix, I = a * F + (1 - a) * B, of the person's
# colour F and the old background's B. Composited as a * I + (1 - a) * N it keeps a share
# a * (1 - a) of B (a rim of the old room), where a * F + (1 - a) * N is wanted. The difference is
# a * (1 - a) * (F - B): F and B are estimated as the mean colour of the surely-person and the
# surely-background pixels nearby, at half the mask's work resolution (F - B varies slowly; the
# mask's own detail comes back in a * (1 - a)). It can be added to the output, or as
# a * (F - B) to a background layer that is still small (blur).
EDGE_RADIUS = 2  # pixels each side at half work resolution (25 px at 720p): reaches sure pixels
_SURE = np.float32(1.0 / 255.0)  # a neighbourhood with less sure weight than this has no estimate


def sure_weights(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the surely-person and surely-background pixels: 1 at alpha 1 (0), fading to 0
    at alpha 0.5, so the mixed pixels of the edge count for little."""
    person = np.clip(alpha * np.float32(2.0) - np.float32(1.0), 0.0, 1.0)
    background = np.clip(np.float32(1.0) - alpha * np.float32(2.0), 0.0, 1.0)
    return person * person, background * background


def background_weights(alpha: np.ndarray) -> np.ndarray:
    """`sure_weights(alpha)[1]` in one pass."""
    out = np.empty(alpha.shape, np.float32)
    fused.background_weights(np.ascontiguousarray(alpha, dtype=np.float32), out)
    return out


def edge_colours(small: np.ndarray, small_alpha: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """F - B (see above) at `size` (H, W; the small size when None), (H, W, 3) float32 (one
    channel per I420 plane); 0 where either side has no sure pixel nearby (deep inside the
    person, far out in the room).

    `small`: the frame's planes merged, (h, w, 3) at half the mask's size; `small_alpha`: the
    mask at that size."""
    ksize = (2 * EDGE_RADIUS + 1,) * 2
    person, background = sure_weights(small_alpha)
    person_sum, background_sum = cv2.blur(person, ksize), cv2.blur(background, ksize)
    known = ((person_sum >= _SURE) & (background_sum >= _SURE)).astype(np.float32)
    small = small.astype(np.float32)
    person_mean = cv2.blur(small * person[..., None], ksize) * (known / np.maximum(person_sum, _SURE))[..., None]
    background_mean = cv2.blur(small * background[..., None], ksize) * (known / np.maximum(background_sum, _SURE))[..., None]
    if size is None:
        return person_mean - background_mean
    return cv2.resize(person_mean - background_mean, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def edge_colours_fast(small: np.ndarray, small_alpha: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """`edge_colours` in a few fused passes: `small` holds the three planes, (3, h, w) uint8, at
    `small_alpha`'s size; F - B comes back (H, W, 3) float32 at `size` = (H, W), or at the small
    size itself when `size` is None."""
    h, w = small_alpha.shape
    person, background = np.empty((h, w, 4), np.float32), np.empty((h, w, 4), np.float32)
    fused.weighted_colours(small, np.ascontiguousarray(small_alpha), person, background)
    ksize = (2 * EDGE_RADIUS + 1,) * 2
    colours = np.empty((h, w, 3), np.float32)
    fused.colour_difference(cv2.blur(person, ksize), cv2.blur(background, ksize), _SURE, colours)
    if size is None:
        return colours
    return cv2.resize(colours, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def correction_offsets(colours: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`edge_correction` offset by 128 into 8 bits for `composite`'s `offsets`: one map per
    plane, at `alpha`'s size."""
    h, w = alpha.shape
    luma, chroma = np.empty((h, w), np.uint8), np.empty((2, h, w), np.uint8)
    fused.correction_offsets(colours, np.ascontiguousarray(alpha), luma, chroma)
    return luma, chroma[0], chroma[1]


def edge_correction(colours: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per plane, the map to add to an output composited with `alpha`: a * (1 - a) * (F - B).
    (A background layer takes a * (F - B): see `blurred`'s `share`.)"""
    share = alpha * (np.float32(1.0) - alpha)
    return tuple(cv2.split(colours * share[..., None]))


WRAP_RADIUS = 4  # work pixels (20 px at 720p): how far the background's light reaches in


def light_wrap(small_frame: np.ndarray, small_layer: np.ndarray, alpha: np.ndarray, strength: float):
    """Per plane, the map that lets the new background's light into the person's edge: within
    WRAP_RADIUS of the background, the person's colour moves towards the background's by up to
    `strength` (the band's weight is the background's share nearby, times alpha). All at
    `alpha`'s size: `small_frame` and `small_layer` are (h, w, 3) planes merged."""
    ksize = (2 * WRAP_RADIUS + 1,) * 2
    band = cv2.blur(np.float32(1.0) - alpha, ksize) * alpha * np.float32(strength)
    pull = (cv2.GaussianBlur(small_layer.astype(np.float32), ksize, 0) - small_frame.astype(np.float32))
    return tuple(cv2.split(pull * band[..., None]))


def stack_blur_size(sigma: float) -> int:
    """The odd kernel size of a stack blur with the standard deviation of Gaussian `sigma`.

    A stack blur of radius r weighs offset i by r + 1 - |i|, a variance of r (r + 2) / 6.
    """
    radius = max(1, round(math.sqrt(1.0 + 6.0 * sigma * sigma) - 1.0))
    return 2 * radius + 1


def blurred(
    frame: yuv.Frame,
    sigma: float,
    halvings: yuv.Halvings | None = None,
    keep: np.ndarray | None = None,
    add: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    share: np.ndarray | None = None,
) -> np.ndarray:
    """A Gaussian-like blur of the frame, `sigma` in pixels at 720p (scaled with height).

    Blurs a downscaled copy and scales it back: a large blur hides the difference and it costs a
    small fraction of a full-resolution blur. OpenCV's stack blur stands in for the Gaussian at
    the same spread: within one grey level on average, at half the cost. `halvings`: the frame's,
    when shared with others who shrink it.

    `keep` (float32 weights in [0, 1] at any resolution): blur only what it weighs, a normalised
    blur, sum(w * I) / sum(w). With the background's weights, the person's colours never smear
    into the blurred room around them (blurring the whole frame leaves a halo even behind a
    perfect mask). Where nothing kept is in reach (deep inside the person, hidden by the mask
    anyway) the copy's own pixels fill in. `add`: three float32 maps at any size added to the
    planes while they are small (the edge colour correction, see `edge_colours`), each times
    `share` (a map at any size) when given, the two multiplied at the small size.
    """
    h, w = yuv.frame_size(frame)
    sigma = sigma * h / 720.0
    out = yuv.empty(h, w)
    halvings = halvings or yuv.Halvings(frame)
    weights = {}  # the kept weights at each small size (the two chroma planes share theirs)
    for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
        plane_sigma = sigma if i == 0 else sigma / 2  # chroma planes are half size
        ph, pw = src.shape
        factor = blur_shrink(plane_sigma)
        sh, sw = max(1, ph // factor), max(1, pw // factor)
        small = halvings.shrink(i, sh, sw)
        ksize = (stack_blur_size(max(plane_sigma / factor, 0.5)),) * 2
        if keep is None:
            small = cv2.stackBlur(small, ksize)
        else:
            if (sh, sw) not in weights:
                kept = cv2.resize(keep, (sw, sh), interpolation=cv2.INTER_LINEAR)
                # A small pixel that straddles the edge holds some of the person: leave it out.
                kept = cv2.erode(kept, _CROSS)
                weights[(sh, sw)] = (kept, cv2.stackBlur(kept, ksize) + _FILL)
            kept, kept_sum = weights[(sh, sw)]
            small = small.astype(np.float32)
            small = (cv2.stackBlur(small * kept, ksize) + small * _FILL) / kept_sum
        if add is not None:
            small_add = cv2.resize(add[i], (sw, sh), interpolation=cv2.INTER_LINEAR)
            if share is not None:
                small_add *= cv2.resize(share, (sw, sh), interpolation=cv2.INTER_LINEAR)
            small = small + small_add
        if small.dtype != np.uint8:
            small = np.clip(small + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
        resize_linear(small, pw, ph, dst=dst)
    return out


def blurred_clean(frame: yuv.Frame, sigma: float, keep: np.ndarray, colours: np.ndarray, share: np.ndarray,
                  halvings: yuv.Halvings | None = None) -> np.ndarray:
    """`blurred` with `keep`, and `add` = `share` * `colours` (`edge_correction` with a share;
    an (H, W, 3) and an (H', W') map, at any sizes), the two scaled to the small planes and
    multiplied there: the colours are smooth, so that is their product at the mask's size, scaled
    down (the blur halo measures the same), at a fraction of the cost. The planes that shrink to
    the same size share one stack blur of (I * w for each, w) and one fused pass for the rest."""
    h, w = yuv.frame_size(frame)
    sigma = sigma * h / 720.0
    out = yuv.empty(h, w)
    halvings = halvings or yuv.Halvings(frame)
    groups: dict[tuple, list[int]] = {}  # (small height, width, ksize) -> planes
    for i, plane in enumerate(yuv.planes(frame)):
        plane_sigma = sigma if i == 0 else sigma / 2  # chroma planes are half size
        ph, pw = plane.shape
        factor = blur_shrink(plane_sigma)
        sh, sw = max(1, ph // factor), max(1, pw // factor)
        groups.setdefault((sh, sw, stack_blur_size(max(plane_sigma / factor, 0.5))), []).append(i)
    dsts = yuv.planes(out)
    for (sh, sw, ksize), members in groups.items():
        small = np.empty((len(members), sh, sw), np.uint8)
        for k, i in enumerate(members):
            halvings.shrink(i, sh, sw, dst=small[k])
        kept = cv2.erode(cv2.resize(keep, (sw, sh), interpolation=cv2.INTER_LINEAR), _CROSS)  # as `blurred`
        stack = np.empty((sh, sw, len(members) + 1), np.float32)
        fused.kept_planes(small, kept, stack)
        small_add = np.empty((sh, sw, 3), np.float32)
        fused.alpha_share(cv2.resize(colours, (sw, sh), interpolation=cv2.INTER_LINEAR).reshape(sh, sw, 3),
                          cv2.resize(share, (sw, sh), interpolation=cv2.INTER_LINEAR), small_add)
        if len(members) < 3:
            small_add = np.ascontiguousarray(small_add[..., members])
        result = np.empty_like(small)
        fused.normalised_finish(small, cv2.stackBlur(stack, (ksize, ksize)), _FILL, small_add, result)
        for k, i in enumerate(members):
            resize_linear(result[k], dsts[i].shape[1], dsts[i].shape[0], dst=dsts[i])
    return out


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_FILL = np.float32(0.005)  # weight of the copy's own pixels: it shows only where nothing kept is near


def solid(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """An I420 frame of one colour."""
    out = yuv.empty(height, width)
    for plane, value in zip(yuv.planes(out), yuv.colour(rgb)):
        plane[...] = value
    return out


def cover(image_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale and centre-crop an RGB image to fill (height, width) without distortion; I420 out."""
    ih, iw = image_rgb.shape[:2]
    scale = max(height / ih, width / iw)
    rh, rw = max(height, round(ih * scale)), max(width, round(iw * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (rw, rh), interpolation=interpolation)
    top, left = (rh - height) // 2, (rw - width) // 2
    return yuv.from_rgb(np.ascontiguousarray(resized[top : top + height, left : left + width]))


def toon(frame: yuv.Frame, smoothing: int = 2, edges: float = 0.6) -> np.ndarray:
    """A model-free cartoon look: edge-preserving smoothing, flattened colours, dark outlines.

    Works at half resolution (bilateral filtering is the cost) and scales back.
    """
    h, w = yuv.frame_size(frame)
    sh, sw = (h // 4) * 2, (w // 4) * 2  # half size, kept even for I420
    small = yuv.to_rgb(yuv.resize(frame, sh, sw))
    for _ in range(smoothing):
        small = cv2.bilateralFilter(small, 5, 40, 5)
    # Flatten colours into bands of 24 levels: the poster look.
    flat = (small // 24) * 24 + 12
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    outline = cv2.adaptiveThreshold(
        cv2.medianBlur(grey, 5), 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4
    )
    # outline is 255 away from edges and 0 on them; darken edges by `edges`.
    keep = 1.0 - edges * (1.0 - outline.astype(np.float32) / 255.0)
    out = (flat.astype(np.float32) * keep[..., None]).astype(np.uint8)
    return yuv.resize(yuv.from_rgb(out), h, w, interpolation=cv2.INTER_LINEAR)
