"""Light's white balance on ndarrays: the chroma pulled part way to grey by whole levels."""

import numpy as np
import pytest

from camfx.engine.faces import light
from camfx.engine.media import yuv

pytestmark = pytest.mark.unit


def test_white_balance_shifts_every_chroma_pixel_by_the_same_whole_level():
    rng = np.random.default_rng(0)
    frame = yuv.empty(64, 96)
    y, u, v = yuv.planes(frame)
    y[...] = rng.integers(0, 256, y.shape)
    u[...] = rng.integers(135, 146, u.shape)  # mean ~140: 0.5 x (128 - 140) = -6 levels
    v[...] = rng.integers(126, 131, v.shape)  # mean ~128: less than a level, left alone
    before = frame.copy()
    light.white_balance(frame)
    _, u0, v0 = yuv.planes(before)
    expected = round(light.WHITE_BALANCE * (128 - float(u0[:: light.WB_SAMPLE_ROWS].mean())))
    assert expected == -6
    assert np.array_equal(u.astype(int) - u0, np.full(u.shape, expected))
    assert np.array_equal(v, v0) and np.array_equal(yuv.planes(frame)[0], yuv.planes(before)[0])
