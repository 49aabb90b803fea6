"""The benchmarks' synthetic camera moves like a person, not like a rigid picture."""

import numpy as np

from camfx.bench.clip import person_clip
from camfx.engine import yuv


def test_the_person_moves_by_fractions_of_a_pixel():
    """No patch of a frame is a whole-pixel shift of the frame before: an encoder finds no exact
    match, as with a real camera (the echo baseline would otherwise encode unrealistically cheaply)."""
    luma = [yuv.planes(f)[0].astype(np.int16) for f in person_clip(640, 480, 60)]
    for i in (5, 20, 40):
        previous, patch = luma[i - 1], luma[i][300:364, 300:364]  # inside the portrait
        best = min(
            np.abs(previous[300 + dy : 364 + dy, 300 + dx : 364 + dx] - patch).mean()
            for dy in range(-8, 9)
            for dx in range(-24, 25)
        )
        assert best > 0.5
        assert np.abs(luma[i] - previous).mean() > 1.0  # and it does move


def test_the_clip_loops_smoothly():
    clip = person_clip(320, 240, 30)
    step = np.abs(clip[1].astype(int) - clip[0]).mean()
    wrap = np.abs(clip[0].astype(int) - clip[-1]).mean()
    assert wrap < 2 * step
