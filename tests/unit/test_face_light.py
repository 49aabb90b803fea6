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


@pytest.mark.parametrize("mode", ["studio", "key"])
def test_light_maps_follow_a_moving_face_without_remaking_its_light(mode, monkeypatch):
    """A face that moves gets a slice of the light made once: the map is light_map's, to within
    two steps of the 8-bit gain (1/64) on a few cells, centred where the face is now."""
    made = []
    face_light = light._face_light
    monkeypatch.setattr(light, "_face_light", lambda *args: made.append(1) or face_light(*args))
    maps, remade = light.LightMaps(), 0
    for i in range(40):
        face = (300.0 + 13.7 * i, 330.0 + 2.3 * i, 260.0 + 0.5 * (i % 3), 330.0, 0.05)
        before = len(made)
        got = maps.get(720, 1280, face, mode, 1.25, 0.3)
        remade += len(made) - before
        want = light.light_map(720, 1280, face, mode, 1.25, 0.3)
        steps = np.abs(np.round(got * 64) - np.round(want * 64))
        assert steps.max() <= 2 and (steps > 0).mean() < 0.15, (i, steps.max(), (steps > 0).mean())
        peak = np.unravel_index(np.argmax(got), got.shape)
        assert np.abs(np.array(peak) - np.unravel_index(np.argmax(want), want.shape)).max() <= 1
    assert remade == 1  # made for the first frame only: the face kept its size and roll
    assert maps.get(720, 1280, None, mode, 1.0, 0.0).max() == 1.0  # no face, no vignette: unchanged


def test_gain_pass_keeps_its_plan_only_for_the_same_map():
    rng = np.random.default_rng(2)
    frames = [yuv.from_rgb(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)) for _ in range(3)]
    lit = light.light_map(72, 128, (60.0, 40.0, 30.0, 36.0, 0.1), "studio", 1.4, 0.0)
    vignette = light.light_map(72, 128, None, "off", 1.0, 0.8)
    applied = light.GainPass()
    for frame, gain in zip(frames, (lit, lit, vignette)):
        want = frame.copy()
        light.apply_gain(want, gain)  # worked out afresh
        assert not np.array_equal(want, frame)
        applied(frame, gain)
        assert np.array_equal(frame, want)
