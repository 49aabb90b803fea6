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
        got = maps.get(720, 1280, face, mode, 1.25, 0.3).gain
        remade += len(made) - before
        want = light.light_map(720, 1280, face, mode, 1.25, 0.3)
        steps = np.abs(np.round(got * 64) - np.round(want * 64))
        assert steps.max() <= 2 and (steps > 0).mean() < 0.15, (i, steps.max(), (steps > 0).mean())
        peak = np.unravel_index(np.argmax(got), got.shape)
        assert np.abs(np.array(peak) - np.unravel_index(np.argmax(want), want.shape)).max() <= 1
    assert remade == 1  # made for the first frame only: the face kept its size and roll
    assert maps.get(720, 1280, None, mode, 1.0, 0.0).gain.max() == 1.0  # no face, no vignette: unchanged


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
        applied(frame, light.GainMap(gain, (72, 128)))
        assert np.array_equal(frame, want)


@pytest.mark.parametrize("mode", ["studio", "key"])
def test_a_moving_face_light_is_placed_to_the_pixel_with_one_plan(mode, monkeypatch):
    """Without a vignette a moving face's light is one big map placed under the picture: the
    gain pass plans it once (while the exposure stays) and lights each frame as a map made
    afresh for the face there would, to within two steps of the 8-bit gain (1/64), and leaves
    the far corner alone."""
    planned = []
    plan = light._plan
    monkeypatch.setattr(light, "_plan", lambda *args: planned.append(1) or plan(*args))
    rng = np.random.default_rng(3)
    frame = yuv.from_rgb(rng.integers(40, 200, (360, 640, 3), dtype=np.uint8))
    maps, applied, ours = light.LightMaps(), light.GainPass(), 0
    for i in range(12):
        face = (200.0 + 9.3 * i, 150.0 + 3.1 * i, 90.0, 110.0, 0.05)
        placed = maps.get(360, 640, face, mode, 1.3, 0.0)
        assert placed.size == (720, 1280)
        got, before_call = frame.copy(), len(planned)
        applied(got, placed)
        ours += len(planned) - before_call
        want = frame.copy()
        light.apply_gain(want, light.light_map(360, 640, face, mode, 1.3, 0.0))
        luma, reference, before = (yuv.planes(f)[0].astype(int) for f in (got, want, frame))
        assert np.abs(luma - reference).max() <= 2 * 255 / 64, i  # two steps of the gain, at the brightest
        assert (luma != before).any() and np.array_equal(luma[-40:, -60:], before[-40:, -60:])
    assert ours == 1
    before_call = len(planned)
    applied(frame.copy(), maps.get(360, 640, face, mode, 1.45, 0.0))
    assert len(planned) == before_call + 1  # a new exposure: a new map, planned again


def test_the_applied_exposure_holds_while_the_measure_hovers_and_follows_a_trend(monkeypatch):
    """The light stage applies the eased exposure in steps of 1/64, each only once the eased
    value is most of a step away: a face's exposure hovering between two steps gives one light
    (no flicker, no new map each frame); a real change still moves it step by step."""
    from camfx.engine.faces import stages
    from camfx.engine.faces.tracker import Faces
    from camfx.engine.params import Params
    from camfx.engine.pipeline.stages import Work

    # Settled at 1.30, then hovering about 1.3047, where 83/64 and 84/64 meet, then rising.
    measured = iter([1.30] * 10 + [1.2947, 1.3147] * 10 + [1.30 + 0.02 * i for i in range(1, 11)])
    monkeypatch.setattr(stages, "face_exposure", lambda *args: next(measured))
    used = []
    get = light.LightMaps.get
    monkeypatch.setattr(light.LightMaps, "get", lambda self, *args: used.append(args[4]) or get(self, *args))
    rng = np.random.default_rng(4)
    points = (rng.random((468, 2)) * [60, 70] + [40, 20]).astype(np.float32)
    stage = stages.Light()
    for _ in range(40):
        frame = yuv.empty(120, 160)
        frame[...] = 100
        work = Work(image=frame, params=Params(effect="blur", light="studio"))
        work.output, work.faces = frame, Faces((np.float32([40, 20, 100, 90]),), points, (120, 160))
        stage(work)
    assert set(used[:30]) == {83 / 64}  # settled, then hovering: one exposure
    assert used[-1] - used[29] >= 0.1 and all(b >= a for a, b in zip(used[29:], used[30:]))


def test_a_gain_lights_colours_and_keeps_their_saturation():
    """The gain multiplies each pixel's colour, as more light would: the luma and the chroma's
    distance from grey by the same factor (a luma-only gain pales a lit face toward grey)."""
    rng = np.random.default_rng(5)
    frame = yuv.empty(64, 96)
    y, u, v = yuv.planes(frame)
    y[...] = rng.integers(60, 150, y.shape)
    u[...] = rng.integers(100, 156, u.shape)
    v[...] = rng.integers(100, 156, v.shape)
    before = frame.copy()
    light.apply_gain(frame, np.full((8, 12), 1.5, np.float32))
    for after, was, grey in zip(yuv.planes(frame), yuv.planes(before), (0, 128, 128)):
        want = grey + (was.astype(float) - grey) * 1.5
        assert np.abs(after - np.round(want)).max() <= 1
