"""media.scale: bilinear scaling as cv2.resize's INTER_LINEAR does it, by the faster way."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camfx.engine.media.scale import resize_linear

pytestmark = pytest.mark.unit


def smooth(h: int, w: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(3)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), (0, 0), 1.5)
    return picture if channels > 1 or picture.ndim == 2 else picture[..., 0]


@pytest.mark.parametrize("size, target", [((180, 320), (720, 1280)), ((120, 160), (240, 320)),
                                          ((91, 160), (360, 640)), ((480, 640), (240, 320)),
                                          ((360, 640), (480, 320)), ((480, 640), (256, 341)),
                                          ((480, 480), (256, 256))])
def test_it_scales_as_cv2_resize_does(size, target):
    """Enlarged or shrunk (by warpAffine; an exact halving by cv2.resize): pixel centres where
    cv2.resize puts them, within one level; a half-pixel shift would be several levels off at
    these edges."""
    src = smooth(*size)
    want = cv2.resize(src, target[::-1], interpolation=cv2.INTER_LINEAR).astype(int)
    got = resize_linear(src, target[1], target[0])
    assert got.shape == target and np.abs(got.astype(int) - want).max() <= 1
    shifted = cv2.warpAffine(src, np.float32([[size[1] / target[1], 0, 0], [0, size[0] / target[0], 0]]),
                             target[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.abs(shifted.astype(int) - want).max() > 1  # what the test tells apart


def test_it_writes_into_dst_and_scales_every_channel():
    src = smooth(90, 160, 3)
    dst = np.zeros((360, 640, 3), np.uint8)
    out = resize_linear(src, 640, 360, dst=dst)
    want = cv2.resize(src, (640, 360), interpolation=cv2.INTER_LINEAR)
    assert out is dst and np.abs(dst.astype(int) - want).max() <= 1


def test_the_same_size_is_the_plane_itself_or_a_copy_into_dst():
    src = smooth(40, 60)
    assert resize_linear(src, 60, 40) is src
    dst = np.zeros_like(src)
    assert resize_linear(src, 60, 40, dst=dst) is dst and np.array_equal(dst, src)
