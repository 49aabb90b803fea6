"""Effects and mask refinement on ndarrays: pixels change where they should and nowhere else."""

import cv2
import numpy as np
import pytest

from camfx.engine.effects import filters as effects
from camfx.engine.effects import gain
from camfx.engine.effects.blend import blend_plane, blend_plane_lit
from camfx.engine.effects.mask import EDGE_GAIN, EDGE_LEVEL, GuidedFilter, MaskRefiner, work_size
from camfx.engine.media import yuv
from camfx.engine.pipeline.stages import edge_colours

pytestmark = pytest.mark.unit


def textured(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    return yuv.from_rgb(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def left_half_alpha(h=60, w=80):
    alpha = np.zeros((h, w), np.float32)
    alpha[:, : w // 2] = 1.0
    return alpha


def test_planes_are_views_of_the_frame():
    frame = yuv.empty(4, 6)
    y, u, v = yuv.planes(frame)
    assert (y.shape, u.shape, v.shape) == ((4, 6), (2, 3), (2, 3))
    u[...] = 7
    assert (frame[4:5].ravel()[:6] == 7).all()


@pytest.mark.parametrize("h, w", [(270, 480), (180, 320), (718, 1280), (2, 2)])
def test_planes_fit_every_even_size(h, w):
    """Chrome scales 720p down to 480x270: H % 4 == 2 must work (chroma rows are not whole rows)."""
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = yuv.from_rgb(rgb)
    y, u, v = yuv.planes(frame)
    assert (y.shape, u.shape, v.shape) == ((h, w), (h // 2, w // 2), (h // 2, w // 2))
    assert np.shares_memory(u, frame) and np.shares_memory(v, frame)
    blurred = effects.composite(frame, effects.blurred(frame, 8), np.ones((10, 10), np.float32))
    assert np.array_equal(blurred, frame)
    assert yuv.model_input(frame, 144, 256).shape == (144, 256, 3)


def test_shared_halvings_shrink_exactly_as_each_plane_alone():
    frame = textured(720, 1280)
    halvings = yuv.Halvings(frame)
    for height, width in [(144, 256), (180, 320), (90, 160), (360, 640), (100, 100)]:
        for i, plane in enumerate(yuv.planes(frame)):
            h, w = (height, width) if i == 0 else (height // 2, width // 2)
            assert np.array_equal(halvings.shrink(i, h, w), yuv.PlaneHalvings(plane).shrink(h, w))


def test_halvings_are_made_once_however_many_threads_ask(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    halved, resize = [], cv2.resize

    def counting_resize(src, size, *args, interpolation=cv2.INTER_LINEAR, **kwargs):
        if interpolation == cv2.INTER_AREA:
            halved.append(size)
        return resize(src, size, *args, interpolation=interpolation, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting_resize)
    halvings = yuv.Halvings(textured(720, 1280))
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: halvings.shrink(0, 144, 256), range(8)))
    assert halved == [(640, 360), (320, 180)]  # 1280x720 -> 640x360 -> 320x180, then bilinear
    assert all(np.array_equal(o, outs[0]) for o in outs)


def test_composite_takes_foreground_where_alpha_is_one_and_background_where_zero():
    fg, bg = textured(seed=1), textured(seed=2)
    out = effects.composite(fg, bg, left_half_alpha())
    for o, f, b in zip(yuv.planes(out), yuv.planes(fg), yuv.planes(bg)):
        w = o.shape[1]
        margin = w // 8  # the bilinear alpha edge
        assert np.array_equal(o[:, : w // 2 - margin], f[:, : w // 2 - margin])
        assert np.array_equal(o[:, w // 2 + margin :], b[:, w // 2 + margin :])


def test_blend_plane_is_the_rounded_weighted_mean_for_every_weight():
    """Every (foreground, background, weight) byte triple class: 0, 255 and all between."""
    rng = np.random.default_rng(3)
    fg, bg = (rng.integers(0, 256, (256, 300), dtype=np.uint8) for _ in range(2))
    fg[0], bg[0], fg[1], bg[1] = 255, 0, 0, 255  # the extremes, where 16-bit lanes overflow first
    weight = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 300))
    padded = np.zeros((256, 320), np.uint8)
    padded[:, :300] = fg
    out = np.empty_like(fg)
    blend_plane(padded[:, :300], bg, weight, out)  # a strided view, as decoded planes are
    f, b, w = (a.astype(np.int64) for a in (fg, bg, weight))
    assert np.array_equal(out, (f * w + b * (255 - w) + 127) // 255)


@pytest.mark.parametrize("scale, shift, background_shift", [(0, 0, 0), (210, 0, 5), (255, 12, -3), (256, -12, 0),
                                                           (256, 255, -255), (210, -255, 255)])
def test_lit_blend_shifts_and_scales_each_side(scale, shift, background_shift):
    rng = np.random.default_rng(4)
    fg, bg = (rng.integers(0, 256, (256, 300), dtype=np.uint8) for _ in range(2))
    fg[0], bg[0], fg[1] = 255, 255, 0  # where 16-bit lanes overflow first, and the clipping
    weight = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 300))
    out = np.empty_like(fg)
    blend_plane_lit(fg, bg, weight, scale, shift, background_shift, out)
    f, b, w = (a.astype(np.int64) for a in (fg, bg, weight))
    f, b = np.clip(f + shift, 0, 255), np.clip((b * scale + 128) // 256 + background_shift, 0, 255)
    assert np.array_equal(out, (f * w + b * (255 - w) + 127) // 255)


def test_composite_lights_the_person_and_the_room_apart():
    """Studio Light's room: luma scaled where the background shows; white balance: each side's
    chroma shifted by its own levels; nothing else changed, on every path (plain, edge offsets,
    corrected)."""
    fg, bg = textured(seed=1), textured(seed=2)
    alpha = left_half_alpha()
    h, w = alpha.shape
    offsets = tuple(np.full(s, 128, np.uint8) for s in [(h, w)] * 3)
    correction = tuple(np.zeros((h, w), np.float32) for _ in range(3))
    for extra in ({}, {"offsets": offsets}, {"correction": correction}):
        plain = effects.composite(fg, bg, alpha, **extra)
        lit = effects.composite(fg, bg, alpha, background_light=0.82, foreground_shift=(5, -7),
                                background_shift=(-2, 3), **extra)
        for i, (before, after) in enumerate(zip(yuv.planes(plain), yuv.planes(lit))):
            cols = before.shape[1]
            person, room = slice(0, cols // 2 - cols // 8), slice(cols // 2 + cols // 8, cols)
            before, after = before.astype(np.int64), after.astype(np.int64)
            if i == 0:
                assert np.array_equal(after[:, person], before[:, person])
                assert np.abs(after[:, room] - (before[:, room] * 210 + 128) // 256).max() <= 1
            else:
                assert np.array_equal(after[:, person], np.clip(before[:, person] + (5, -7)[i - 1], 0, 255))
                assert np.array_equal(after[:, room], np.clip(before[:, room] + (-2, 3)[i - 1], 0, 255))


def test_gain_multiply_matches_a_full_size_gain_and_stays_in_its_view():
    """The one-pass gain equals scaling the map up bilinearly and multiplying (to 8-bit rounding
    of the interpolated gain), saturates at 255, and writes only the view it is given."""
    rng = np.random.default_rng(4)
    fixed = cv2.GaussianBlur(rng.integers(32, 200, (30, 40), dtype=np.uint8), (5, 5), 0)
    fixed[0, 0] = 255  # a 4x gain: bright pixels saturate
    frame = rng.integers(0, 256, (260, 340), dtype=np.uint8)
    view = frame[10:250, 20:340]  # strided, as a plane's region is
    before = frame.copy()
    expected = cv2.multiply(view.astype(np.float32), cv2.resize(fixed, (320, 240)).astype(np.float32),
                            scale=1 / gain.ONE)
    gain.multiply(view, fixed)
    assert np.abs(view.astype(np.float32) - np.clip(np.round(expected), 0, 255)).max() <= 4
    assert view.max() == 255
    outside = np.ones(frame.shape, bool)
    outside[10:250, 20:340] = False
    assert np.array_equal(frame[outside], before[outside])
    flat = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    unchanged = flat.copy()
    gain.multiply(flat, np.full((6, 8), gain.ONE, np.uint8))  # gain 1: every pixel as it was
    assert np.array_equal(flat, unchanged)


def test_composite_refuses_a_background_of_another_size():
    with pytest.raises(ValueError, match="background"):
        effects.composite(textured(), textured(120, 160), left_half_alpha())


def test_blur_changes_background_and_keeps_person():
    frame = textured()
    out = effects.composite(frame, effects.blurred(frame, 12), left_half_alpha())
    y_in, y_out = yuv.planes(frame)[0].astype(int), yuv.planes(out)[0].astype(int)
    assert np.abs(y_out[:, :120] - y_in[:, :120]).max() == 0  # person untouched
    assert np.abs(y_out[:, 200:] - y_in[:, 200:]).mean() > 30  # noise background smoothed away
    assert y_out[:, 200:].std() < y_in[:, 200:].std() / 4


@pytest.mark.parametrize("sigma", [2, 7, 12, 30])
def test_blur_matches_a_full_resolution_gaussian(sigma):
    """Downscaled stack blur, scaled back up, against cv2.GaussianBlur of every plane at full size
    (sigma is given at 720p; chroma planes are half size). At 7 the planes shrink as far as the
    blur allows (1.75 and 1.75 px of the shrunken luma and chroma): no steps from the scale-up."""
    from camfx.bench.clip import person_clip

    frame = person_clip(1280, 720, 1)[0]
    out = effects.blurred(frame, sigma)
    for i, (src, got) in enumerate(zip(yuv.planes(frame), yuv.planes(out))):
        want = cv2.GaussianBlur(src, (0, 0), sigma if i == 0 else sigma / 2)
        diff = np.abs(got.astype(int) - want)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_blur_strength_scales_the_blur():
    frame = textured()
    weak, strong = effects.blurred(frame, 2), effects.blurred(frame, 30)
    assert yuv.planes(strong)[0].std() < yuv.planes(weak)[0].std()


def person_over_room(h=240, w=320, split=160, person=(250, 240, 230), seed=1):
    """A bright flat person on the left, a dark textured room on the right, as I420."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    rgb[:, :split] = person
    return yuv.from_rgb(rgb)


def test_the_blurred_room_holds_none_of_the_persons_colour():
    """Blurring the whole frame smears the bright person into the dark room beside them (a halo,
    even behind a perfect mask); the background-only blur keeps the room's own level there."""
    frame = person_over_room()
    alpha = np.zeros((60, 80), np.float32)
    alpha[:, :40] = 1.0
    keep = effects.sure_weights(alpha)[1]
    room = yuv.planes(frame)[0][:, 200:].mean()
    plain = yuv.planes(effects.blurred(frame, 24))[0][:, 160:176].astype(float).mean()
    clean = yuv.planes(effects.blurred(frame, 24, keep=keep))[0][:, 164:176].astype(float).mean()
    assert plain > room + 25  # the halo the plain blur leaves
    assert abs(clean - room) < 4
    # Far from the person both are the same blur.
    far_plain = yuv.planes(effects.blurred(frame, 24))[0][:, 280:].astype(int)
    far_clean = yuv.planes(effects.blurred(frame, 24, keep=keep))[0][:, 280:].astype(int)
    assert np.abs(far_plain - far_clean).mean() < 1.5


def test_edge_pixels_lose_the_old_backgrounds_colour():
    """An edge pixel that is a mix of person and old room, composited over a new colour, comes
    out as the same mix of person and *new* colour (the ideal), not with the old room in it."""
    h, w = 240, 320
    alpha = np.zeros((h, w), np.float32)
    alpha[:, :150] = 1.0
    alpha[:, 150:170] = np.linspace(1.0, 0.0, 22, dtype=np.float32)[1:-1]  # a soft edge 20 px wide
    person, old, new = np.array([230, 200, 170.0]), np.array([20, 150, 40.0]), np.array([40, 60, 200.0])
    a = alpha[..., None]
    frame = yuv.from_rgb((a * person + (1 - a) * old).round().astype(np.uint8))
    ideal = (a * person + (1 - a) * new)[:, 150:170]
    background = effects.solid(h, w, tuple(int(c) for c in new))
    small = cv2.resize(alpha, (80, 60), interpolation=cv2.INTER_AREA)
    correction = effects.edge_correction(edge_colours(frame, small), small)
    plain = yuv.to_rgb(effects.composite(frame, background, small)).astype(float)[:, 150:170]
    clean = yuv.to_rgb(effects.composite(frame, background, small, correction))
    clean = clean.astype(float)[:, 150:170]
    assert np.abs(plain - ideal).mean() > 10  # the old green shows through
    assert np.abs(clean - ideal).mean() < np.abs(plain - ideal).mean() / 3
    # Away from the edge nothing moves.
    whole = effects.composite(frame, background, small, correction)
    assert np.array_equal(yuv.planes(whole)[0][:, :120], yuv.planes(frame)[0][:, :120])


@pytest.mark.parametrize("rgb", [(0, 255, 0), (255, 0, 255), (47, 93, 138)])
def test_solid_background_has_the_key_colour(rgb):
    out = effects.composite(textured(), effects.solid(240, 320, rgb), left_half_alpha())
    back = yuv.to_rgb(out)[:, 200:].reshape(-1, 3).astype(int)
    assert np.abs(back - rgb).max() <= 3  # I420 round trip of a flat colour


def test_cover_fills_without_distortion():
    image = np.zeros((100, 400, 3), np.uint8)
    image[:, 150:250] = 255  # a white band in the middle
    out = yuv.to_rgb(effects.cover(image, 120, 160))
    assert out.shape == (120, 160, 3)
    # the 4:1 image is cropped to 4:3 around its centre: the band now spans the middle 5/8
    assert out[:, 80].mean() > 240 and out[:, 5].mean() < 15


def test_toon_flattens_colours_and_keeps_size():
    frame = textured()
    out = effects.toon(frame, smoothing=2, edges=0.6)
    assert out.shape == frame.shape
    assert len(np.unique(yuv.planes(out)[0])) < len(np.unique(yuv.planes(frame)[0]))


def test_work_size_never_below_model_resolution():
    assert work_size((720, 1280), (144, 256)) == (144, 256)
    assert work_size((240, 320), (144, 256)) == (144, 192)


def test_threshold_mode_is_binary_without_feather():
    prob = np.linspace(0, 1, 144 * 256, dtype=np.float32).reshape(144, 256)
    alpha = MaskRefiner().refine(prob, textured(576, 1024), mode="threshold", threshold=0.5, feather=0)
    assert set(np.unique(alpha)) == {0.0, 1.0}


def test_the_mask_holds_still_where_the_picture_is_still_and_follows_at_once_where_it_moves():
    """Steadiness is per pixel: on a still picture the previous mask keeps `smoothing` of its
    weight; where the picture changed (the right half here) the new mask is taken whole."""
    refiner, frame = MaskRefiner(), textured()
    ones, zeros = np.ones((144, 256), np.float32), np.zeros((144, 256), np.float32)
    refiner.refine(ones, frame, smoothing=0.5)
    still = refiner.refine(zeros, frame, smoothing=0.5)
    # 0.5 kept of 1, then steepened: (0.5 - EDGE_LEVEL) * EDGE_GAIN + 0.5
    half = (0.5 - EDGE_LEVEL) * EDGE_GAIN + 0.5
    assert 0.0 < half < 0.5 and np.allclose(still, half, atol=1e-3)

    refiner.reset()
    refiner.refine(ones, frame, smoothing=0.5)
    moved = frame.copy()
    y = yuv.planes(moved)[0]
    y[:, 160:] = 255 - y[:, 160:]  # the right half of the picture changes
    alpha = refiner.refine(zeros, moved, smoothing=0.5)
    work_w = alpha.shape[1]
    assert np.allclose(alpha[:, : work_w // 2 - 2], half, atol=1e-3)
    assert np.allclose(alpha[:, work_w // 2 + 2 :], 0.0)  # no lag where it moved

    refiner.reset()
    assert np.allclose(refiner.refine(zeros, frame, smoothing=0.5), 0.0)


def test_the_soft_edge_is_steeper_than_the_model_and_sits_on_the_person():
    """The model's probability ramp is narrowed about a level above one half: the mask ends
    where the person is more likely than not, and the see-through rim around it is gone."""
    ramp = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (144, 1))
    alpha = MaskRefiner().refine(ramp, textured(720, 1280), feather=0)
    assert (alpha[0] == 0).sum() > 256 * 0.25 and (alpha[0] == 1).sum() > 256 * 0.2
    assert alpha[0, 128] < 0.5  # p = 0.5 is no longer half person
    assert np.all(np.diff(alpha[0]) >= 0)


def test_guided_filter_snaps_a_coarse_mask_to_image_edges():
    guide = np.zeros((100, 100), np.float32)
    guide[:, 50:] = 1.0  # an image edge at column 50
    coarse = np.zeros((100, 100), np.float32)
    coarse[:, 40:] = 1.0  # a mask edge 10 px off
    snapped = GuidedFilter(guide, radius=12, eps=1e-4)(coarse)
    # the mask now changes where the image does
    profile = snapped[50]
    assert np.argmax(np.diff(profile)) in (48, 49, 50)


def test_bench_engine_paces_frames_at_the_camera_rate(tmp_path):
    import json
    import time

    from camfx.bench.engine import main

    argv = ["--sizes", "320x240", "--effects", "none", "blur", "--frames", "10", "--pace-fps", "60", "--out", str(tmp_path)]
    start = time.perf_counter()
    assert main(argv) == 0
    elapsed = time.perf_counter() - start
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["pace_fps"] == 60 and [r["effect"] for r in data["results"]] == ["none", "blur"]
    assert elapsed >= 2 * 30 / 60  # 2 effects x (10 frames + 20 warm-up), each waited for
    blur = data["results"][1]
    assert blur["total_ms"]["p50"] > 0 and blur["stages_ms"]["segment"]["p50"] > 0
    with pytest.raises(SystemExit):
        main(["--pace-fps", "-1", "--out", str(tmp_path)])


def test_light_wrap_brings_the_new_backgrounds_light_into_the_persons_edge_only():
    """Over a bright new background, a dark person's edge lightens with `light_wrap`; their inside
    and the background itself stay as they were."""
    from camfx.engine.params import Params
    from camfx.engine.pipeline.stages import composite_clean

    h, w = 240, 320
    rgb = np.full((h, w, 3), 60, np.uint8)
    rgb[:, 160:] = (30, 90, 30)  # the old room on the right
    frame = yuv.from_rgb(rgb)
    alpha = np.zeros((60, 80), np.float32)
    alpha[:, :40] = 1.0  # the person on the left
    bright = effects.solid(h, w, (250, 250, 250))
    plain = composite_clean(frame, bright, alpha, Params(effect="replace"))
    wrapped = composite_clean(frame, bright, alpha, Params(effect="replace", light_wrap=1.0))
    y0, y1 = yuv.planes(plain)[0].astype(int), yuv.planes(wrapped)[0].astype(int)
    assert (y1[:, 140:158] - y0[:, 140:158]).mean() > 8  # the edge took the background's light
    assert np.array_equal(y1[:, :80], y0[:, :80])  # the inside did not
    assert np.abs(y1[:, 200:] - y0[:, 200:]).max() <= 1  # nor did the background
