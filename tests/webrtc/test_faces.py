"""The face stages on real pictures, through the real pipeline and the bundled face models:
auto frame on a clip with scripted motion, light, touch-up, toon's faces, main person, low light.

Clips move the astronaut photograph (scikit-image) over a scene; the face's true position in
every frame follows from where the photo was put. Tracking runs inline (no helper pool), so
each frame's faces are that frame's and the results do not depend on the machine's speed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from camfx.bench.clip import portrait_over_scene
from camfx.engine.effects import filters as effects
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.faces import framing, regions
from camfx.engine.faces.models import FaceModels
from camfx.engine.faces.stages import AutoFrame
from camfx.engine.faces.tracker import FaceTracker
from camfx.engine.media import yuv
from camfx.engine.params import Params, ParamsError
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import PROBE_ROWS, Work, default_pipeline

pytestmark = pytest.mark.webrtc

W, H = 1280, 720
PORTRAIT = 0.8  # of the frame's height


@pytest.fixture(scope="module")
def parts():
    return Segmenters(), Backgrounds()


@pytest.fixture(scope="module")
def face_at_origin() -> np.ndarray:
    """The astronaut's face box (x0, y0, x1, y1) when the photo's corner is at (0, 0)."""
    frame = portrait_over_scene(W, H, [(0.0, 0.0)], PORTRAIT)[0]
    found = FaceModels().detect_tiled(yuv.to_rgb(frame))
    return max(found, key=lambda face: face.score).box  # (a weak second: the helmet)


def run(pipeline, frames, **params) -> list[Work]:
    p = Params(**{"effect": "none", **params})
    return [pipeline.process(Work(image=f, params=p)) for f in frames]


def luma(frame) -> np.ndarray:
    return yuv.planes(frame)[0].astype(np.float32)


# --- auto frame -------------------------------------------------------------------------------


def test_auto_frame_follows_a_scripted_move_smoothly_and_returns_to_the_full_frame(parts, face_at_origin):
    still_a, move, still_b, gone = 45, 8, 75, 90
    a, b = (0.18, 0.12), (0.42, 0.08)  # the photo's corner, in frame fractions
    path = [a] * still_a
    path += [(a[0] + (b[0] - a[0]) * (i + 1) / move, a[1] + (b[1] - a[1]) * (i + 1) / move) for i in range(move)]
    path += [b] * still_b
    frames = portrait_over_scene(W, H, path, PORTRAIT)
    frames += [yuv.from_rgb(np.full((H, W, 3), 120, np.uint8))] * gone  # nobody there

    pipeline = default_pipeline(*parts)
    stage = next(s for s in pipeline.stages if isinstance(s, AutoFrame))
    crops = []
    for frame in frames:
        run(pipeline, [frame], framing="follow")
        crops.append(stage.crop)

    def face_in_crop(i: int) -> tuple[float, float]:
        """The true face centre, as a fraction of the crop (target: 0.5, EYE_LINE)."""
        fx, fy = path[i]
        box = face_at_origin + np.float32([fx * W, fy * H, fx * W, fy * H])
        c = crops[i]
        ch = c.width * H / W
        return (((box[0] + box[2]) / 2 - (c.cx - c.width / 2)) / c.width,
                ((box[1] + box[3]) / 2 - (c.cy - ch / 2)) / ch)

    end_of_move = still_a + move
    # 1 s after the move (30 frames) and from then on while still: within 10 % of the target.
    for i in range(end_of_move + 30, end_of_move + still_b):
        x, y = face_in_crop(i)
        assert abs(x - 0.5) <= 0.10 and abs(y - framing.EYE_LINE) <= 0.10, (i, x, y)
    # It zoomed in (head and shoulders), within the maximum zoom.
    assert W / framing.MAX_ZOOM - 1 <= crops[end_of_move + 30].width < 0.9 * W
    # No jump while the face is still: before the move (once settled) and after it.
    for start, stop in ((20, still_a), (end_of_move + 30, end_of_move + still_b)):
        for i in range(start + 1, stop):
            dx = abs(crops[i].cx - crops[i - 1].cx)
            dw = abs(crops[i].width - crops[i - 1].width)
            assert max(dx, dw) <= 0.02 * W, (i, dx, dw)
    # Eased: even while the face moves, no frame's crop leaps.
    jumps = [abs(crops[i].cx - crops[i - 1].cx) for i in range(1, end_of_move + still_b)]
    assert max(jumps) <= 0.05 * W
    # Nobody there: back to the full frame.
    last = crops[-1]
    assert last.width >= W - 1 and abs(last.cx - W / 2) <= 1 and abs(last.cy - H / 2) <= 1


def test_tight_crop_centres_the_face_in_the_output(parts):
    frames = portrait_over_scene(W, H, [(0.12, 0.1)] * 60, PORTRAIT)
    work = run(default_pipeline(*parts), frames, framing="tight")[-1]
    assert yuv.frame_size(work.output) == (H, W)  # the crop is scaled back to the frame's size
    found = FaceModels().detect_tiled(yuv.to_rgb(work.output))
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert abs((x0 + x1) / 2 / W - 0.5) <= 0.05
    assert abs((y0 + y1) / 2 / H - framing.EYE_LINE) <= 0.05
    assert (y1 - y0) / H >= 0.3  # zoomed: the face fills a good part of the picture


@pytest.mark.parametrize("width", [512.0, 700.4, 1100.0])
def test_the_crop_worked_at_its_own_size_comes_back_as_a_full_size_crop_would(width):
    """What later stages see is the crop at its own resolution; brought back to the camera's
    size it is the crop scaled straight to it (bilinear twice against once: within a level or
    two on a photo, where a half-pixel misplacement would be several)."""
    frame = portrait_over_scene(W, H, [(0.12, 0.1)], PORTRAIT)[0]
    crop = framing.Crop(640.3, 330.7, width)
    size = framing.working_size(crop, H, W)
    assert size[1] % framing.WORK_STEP == 0 and size[1] >= width and size[0] % 2 == 0
    assert abs(size[0] / size[1] - H / W) < 0.01
    direct = framing.apply_crop(frame, crop).astype(float)
    worked = framing.scale_back(framing.apply_crop(frame, crop, size), H, W).astype(float)
    assert np.abs(direct - worked).mean() < 1.5
    shifted = framing.scale_back(framing.apply_crop(frame, framing.Crop(641.3, 330.7, width), size), H, W)
    assert np.abs(direct - shifted.astype(float)).mean() > 2 * np.abs(direct - worked).mean()


def test_a_crop_wobbling_across_a_step_keeps_its_working_size():
    stage = AutoFrame()
    widths = [stage._working_size(framing.Crop(640, 360, width), H, W)[1] for width in (830, 835, 829, 833, 828)]
    assert widths == [832, 896, 896, 896, 896]  # grown once, then kept
    assert stage._working_size(framing.Crop(640, 360, 1000), H, W) == (576, 1024)  # outgrown: a new size
    assert stage._working_size(framing.Crop(640, 360, 700), H, W) == (396, 704)  # far smaller: a new size


@pytest.mark.parametrize("effect", ["none", "blur"])
def test_the_stages_work_on_the_cameras_own_pixels_and_the_output_is_resampled_once(parts, effect):
    """Other than `replace`, the stages after framing work on a window of the camera's pixels
    around the crop (a view: nothing resampled, nothing copied), and the output is the crop
    scaled straight to the camera's size."""
    frames = portrait_over_scene(W, H, [(0.12, 0.1)] * 30, PORTRAIT)
    pipeline = default_pipeline(*parts)
    work = run(pipeline, frames, framing="tight", effect=effect)[-1]
    crop = next(s for s in pipeline.stages if isinstance(s, AutoFrame)).crop
    assert W / crop.width > 1.5
    wh, ww = yuv.frame_size(work.image)
    assert crop.width + 4 <= ww < W and np.shares_memory(yuv.planes(work.image)[0], work.camera)
    assert yuv.frame_size(work.output) == (H, W)
    if effect == "none":  # the output is the camera's crop, resampled once
        direct = framing.apply_crop(work.camera, crop).astype(int)
        assert np.abs(work.output.astype(int) - direct).max() <= 1


@pytest.mark.parametrize("effect", ["none", "blur", "replace", "remove", "toon"])
def test_every_effect_with_framing_gives_the_cameras_size_and_the_face_in_the_middle(parts, effect):
    frames = portrait_over_scene(W, H, [(0.12, 0.1)] * 30, PORTRAIT)
    work = run(default_pipeline(*parts), frames, framing="tight", light="studio", touch_up=0.5, effect=effect)[-1]
    assert yuv.frame_size(work.output) == (H, W)
    assert (work.crop is None) == (effect == "replace")  # replace resamples; the rest take a window
    found = FaceModels().detect_tiled(yuv.to_rgb(work.output))
    x0, y0, x1, y1 = max(found, key=lambda face: face.score).box
    assert abs((x0 + x1) / 2 / W - 0.5) <= 0.06 and (y1 - y0) / H >= 0.3


def test_a_window_holds_its_crop_inside_the_frame():
    for cx, cy, width in ((640.3, 330.7, 700.2), (30.0, 20.0, 512.0), (1270.0, 700.0, 900.0), (640.0, 360.0, 1275.0)):
        crop = framing._clamped(framing.Crop(cx, cy, width), H, W)
        size = framing.window_size(crop, H, W)
        y0, x0 = framing.window(crop, H, W, size)
        assert y0 % 2 == 0 and x0 % 2 == 0 and 0 <= x0 <= W - size[1] and 0 <= y0 <= H - size[0]
        crop_h = crop.width * H / W
        assert x0 <= crop.cx - crop.width / 2 and crop.cx + crop.width / 2 <= x0 + size[1]
        assert y0 <= crop.cy - crop_h / 2 + 0.5 and crop.cy + crop_h / 2 - 0.5 <= y0 + size[0]


def test_a_cropped_frame_keeps_the_cameras_probe_rows(parts):
    """A latency probe stamps the camera's top rows: with framing on they reach the output."""
    frames = portrait_over_scene(W, H, [(0.12, 0.1)] * 30, PORTRAIT)
    for f in frames:
        f[:PROBE_ROWS] = np.arange(W, dtype=np.uint8)  # a stamp no crop would leave in place
    work = run(default_pipeline(*parts), frames, framing="tight", effect="blur", probe=True)[-1]
    assert yuv.frame_size(work.image)[1] < W  # worked on a crop
    assert np.array_equal(yuv.planes(work.output)[0][:PROBE_ROWS], frames[-1][:PROBE_ROWS])


def test_the_mask_follows_the_crop(parts):
    """With framing on, the mask stages run on the cropped picture: the mask covers the
    person where the output shows them."""
    frames = portrait_over_scene(W, H, [(0.12, 0.1)] * 45, PORTRAIT)
    work = run(default_pipeline(*parts), frames, framing="tight", effect="remove", key_color="#00ff00")[-1]
    found = FaceModels().detect_tiled(yuv.to_rgb(work.image))  # the crop, at its own size
    scale = W / yuv.frame_size(work.image)[1]  # and the output is it at the camera's
    assert yuv.frame_size(work.output) == (H, W) and scale > 1.5
    x0, y0, x1, y1 = (int(v * scale) for v in found[0].box)
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    rgb = yuv.to_rgb(work.output)
    face = rgb[y0 + dy : y1 - dy, x0 + dx : x1 - dx].reshape(-1, 3)
    green = (face[:, 1] > 200) & (face[:, 0] < 60) & (face[:, 2] < 60)
    assert green.mean() < 0.05  # the face in the crop is not keyed out


# --- light ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dim_clip():
    return portrait_over_scene(W, H, [(0.3, 0.1)] * 3, PORTRAIT, brightness=0.6)


def _face_and_far(face_at_origin):
    box = (face_at_origin + np.float32([0.3 * W, 0.1 * H] * 2)).astype(int)
    x0, y0, x1, y1 = box
    inner = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
    far = (slice(50, 250), slice(W - 300, W - 50))  # scene only, far from the person
    return inner, far


@pytest.mark.parametrize("mode", ["studio", "key"])
def test_light_brightens_the_face_and_not_the_background(parts, dim_clip, face_at_origin, mode):
    inner, far = _face_and_far(face_at_origin)
    before = run(default_pipeline(*parts), dim_clip, effect="blur")[-1].output
    after = run(default_pipeline(*parts), dim_clip, effect="blur", light=mode)[-1].output
    assert luma(after)[inner].mean() >= luma(before)[inner].mean() + 10
    # The room dimmed a little (by BACKGROUND_DIM, less the white balance's shift), not lit.
    assert luma(after)[far].mean() <= 0.9 * luma(before)[far].mean()
    assert luma(after)[far].mean() >= 0.75 * luma(before)[far].mean()


@pytest.mark.parametrize("effect", ["remove", "replace"])
def test_light_leaves_a_new_backgrounds_colours_alone(parts, dim_clip, face_at_origin, effect):
    """remove's key colour (which the overlay page keys out) and replace's picture keep their
    colours under light: the white balance is the person's (the face is still lit); only
    replace's room is dimmed, and remove's key colour stays exact."""
    inner, far = _face_and_far(face_at_origin)
    before = run(default_pipeline(*parts), dim_clip, effect=effect, key_color="#00ff00")[-1].output
    after = run(default_pipeline(*parts), dim_clip, effect=effect, key_color="#00ff00", light="studio")[-1].output
    assert luma(after)[inner].mean() >= luma(before)[inner].mean() + 10
    for plane_before, plane_after in zip(yuv.planes(before)[1:], yuv.planes(after)[1:]):
        chroma_far = (slice(far[0].start // 2, far[0].stop // 2), slice(far[1].start // 2, far[1].stop // 2))
        assert np.array_equal(plane_after[chroma_far], plane_before[chroma_far])
    if effect == "remove":
        assert np.array_equal(luma(after)[far], luma(before)[far])
    else:
        assert luma(after)[far].mean() <= 0.9 * luma(before)[far].mean()


def test_light_white_balances_the_whole_blurred_picture(parts, dim_clip, face_at_origin):
    """blur shows only the camera's picture: a colour cast comes out of the person and the room."""
    inner, far = _face_and_far(face_at_origin)
    cast = [f.copy() for f in dim_clip]
    for frame in cast:
        u, v = yuv.planes(frame)[1:]
        u[...] = np.clip(u.astype(int) + 16, 0, 255)
        v[...] = np.clip(v.astype(int) - 12, 0, 255)
    before = run(default_pipeline(*parts), cast, effect="blur")[-1].output
    after = run(default_pipeline(*parts), cast, effect="blur", light="studio")[-1].output
    for i, towards in ((1, -1), (2, +1)):
        moved = []
        for region in (inner, far):
            half = tuple(slice(r.start // 2, r.stop // 2) for r in region)
            moved.append(yuv.planes(after)[i][half].astype(float).mean() - yuv.planes(before)[i][half].astype(float).mean())
        assert min(m * towards for m in moved) >= 2  # pulled back towards grey
        assert abs(moved[0] - moved[1]) <= 1  # by the same levels, person and room


def test_light_without_a_mask_leaves_the_far_background_alone(parts, dim_clip, face_at_origin):
    inner, far = _face_and_far(face_at_origin)
    frame = dim_clip[-1]
    after = run(default_pipeline(*parts), dim_clip, light="studio")[-1].output
    assert luma(after)[inner].mean() >= luma(frame)[inner].mean() + 10
    assert abs(luma(after)[far].mean() - luma(frame)[far].mean()) <= 2
    assert after is not frame and luma(frame)[inner].mean() < luma(after)[inner].mean()  # input untouched


def test_vignette_darkens_corners_only(parts, dim_clip):
    frame = dim_clip[-1]
    out = run(default_pipeline(*parts), dim_clip, vignette=1.0)[-1].output
    assert luma(out)[:40, :40].mean() < luma(frame)[:40, :40].mean() - 5
    centre = (slice(H // 2 - 40, H // 2 + 40), slice(W // 2 - 40, W // 2 + 40))
    assert abs(luma(out)[centre].mean() - luma(frame)[centre].mean()) <= 2


def test_low_light_lifts_the_picture_and_keeps_skin_hue(parts, dim_clip, face_at_origin):
    inner, _ = _face_and_far(face_at_origin)
    frame = dim_clip[-1]
    out = run(default_pipeline(*parts), dim_clip, low_light=1.0)[-1].output
    assert luma(out).mean() > luma(frame).mean() + 15
    half = tuple(slice(s.start // 2, s.stop // 2) for s in inner)

    def hue_and_saturation(f) -> tuple[float, float]:
        u, v = (yuv.planes(f)[i][half].astype(np.float32).mean() - 128 for i in (1, 2))
        return float(np.degrees(np.arctan2(v, u))), float(np.hypot(u, v))

    (hue0, sat0), (hue1, sat1) = hue_and_saturation(frame), hue_and_saturation(out)
    assert abs(hue1 - hue0) <= 3  # the face's hue stays
    assert sat1 >= sat0  # and is not washed out


# --- touch-up and toon ------------------------------------------------------------------------


def _sharpness(plane: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(plane.astype(np.float32), cv2.CV_32F))[mask].mean())


def test_touch_up_smooths_skin_and_keeps_the_eyes_sharp(parts):
    frames = portrait_over_scene(W, H, [(0.3, -0.2)] * 3, 1.6)  # a close face: skin detail to smooth
    frame = frames[-1]
    work = run(default_pipeline(*parts), frames, touch_up=1.0)[-1]
    points = work.faces.points
    box = regions.face_box(points, H, W)
    skin = np.zeros((H, W), bool)
    skin[box[1]:box[3], box[0]:box[2]] = regions.skin_mask(points, box) > 0.99
    eyes = np.zeros((H, W), np.uint8)
    for part in (regions.RIGHT_EYE, regions.LEFT_EYE):
        cv2.fillConvexPoly(eyes, cv2.convexHull(points[part].astype(np.int32)), 1)
    eyes = eyes.astype(bool)
    assert skin.sum() > 5000 and eyes.sum() > 300
    before, after = yuv.planes(frame)[0], yuv.planes(work.output)[0]
    assert _sharpness(after, skin) <= 0.7 * _sharpness(before, skin)
    assert _sharpness(after, eyes) >= 0.95 * _sharpness(before, eyes)
    outside = np.ones((H, W), bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert np.array_equal(after[outside], before[outside])  # nothing changes off the face


def test_touch_up_moves_with_the_face(parts, monkeypatch):
    """Touch-up's grid is anchored to the face (its skin mask is kept while the face only moves):
    the same face moved by whole pixels is touched up as before, moved with it."""
    from camfx.engine.faces.regions import SkinMasks
    from camfx.engine.faces.touchup import touch_up

    frame = portrait_over_scene(W, H, [(0.3, -0.2)] * 3, 1.6)[-1]
    points = run(default_pipeline(*parts), [frame] * 3, touch_up=1.0)[-1].faces.points
    dx, dy = 24, 10
    shifted = yuv.empty(H, W)
    for i, (src, dst) in enumerate(zip(yuv.planes(frame), yuv.planes(shifted))):
        f = 1 if i == 0 else 2
        dst[...] = np.roll(src, (dy // f, dx // f), (0, 1))
    drawn = []
    draw = regions.draw_skin
    monkeypatch.setattr(regions, "draw_skin", lambda *args: drawn.append(1) or draw(*args))
    masks = SkinMasks()
    still = frame.copy()
    touch_up(still, points, 0.8, masks)
    touch_up(shifted, points + np.float32([dx, dy]), 0.8, masks)
    assert len(drawn) == 1  # the mask was kept, not drawn again
    before, after = yuv.planes(still)[0], yuv.planes(shifted)[0]
    assert np.array_equal(after[dy:, dx:], before[: H - dy, : W - dx])
    assert not np.array_equal(before, yuv.planes(frame)[0])  # and it did touch the face up


def test_touch_up_keeps_a_still_face_weights_and_nothing_else(parts):
    """A still face's skin weights, placed over its box, are kept from frame to frame: the
    picture under them is touched up as a fresh start would, at any amount (it scales them as
    they are mixed in), and a change of the face's place is not served the kept weights."""
    from camfx.engine.faces.regions import SkinMasks
    from camfx.engine.faces.touchup import touch_up

    frames = portrait_over_scene(W, H, [(0.3, -0.2)] * 3 + [(0.31, -0.2)], 1.6)
    points = run(default_pipeline(*parts), frames[:3], touch_up=1.0)[-1].faces.points
    kept = SkinMasks()
    for frame, amount, shift in ((frames[0], 0.8, 0.0), (frames[3], 0.8, 0.0), (frames[3], 0.5, 0.0),
                                 (frames[3], 0.5, 12.8)):
        moved = points + np.float32([shift, 0])
        fresh, again = frame.copy(), frame.copy()
        touch_up(fresh, moved, amount, SkinMasks())
        touch_up(again, moved, amount, kept)
        assert np.array_equal(again, fresh)
        assert not np.array_equal(again, frame)


def test_toon_draws_no_outlines_on_the_face_skin(parts):
    frames = portrait_over_scene(W, H, [(0.3, -0.2)] * 3, 1.6)
    work = run(default_pipeline(*parts), frames, effect="toon")[-1]
    plain = effects.toon(frames[-1], Params().toon_smoothing, Params().toon_edges)
    points = work.faces.points
    box = regions.face_box(points, H, W)
    skin = regions.skin_mask(points, box) > 0.99
    crop = (slice(box[1], box[3]), slice(box[0], box[2]))

    def dark_lines(frame) -> float:
        y = yuv.planes(frame)[0][crop].astype(np.float32)
        return float(((cv2.blur(y, (9, 9)) - y) > 25)[skin].mean())  # much darker than around

    assert dark_lines(plain) > 0.01  # the plain toon look draws lines on this face
    assert dark_lines(work.output) <= 0.3 * dark_lines(plain)


# --- main person ------------------------------------------------------------------------------


def test_people_main_keeps_only_the_main_person(parts):
    from matplotlib import cbook
    import matplotlib.image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = np.ascontiguousarray(matplotlib.image.imread(f, format="jpg")[..., :3])
    scene = yuv.to_rgb(portrait_over_scene(W, H, [(0.32, 0.05)], 0.95)[0])  # the astronaut, centre
    small = cv2.resize(grace, (260, 340), interpolation=cv2.INTER_AREA)  # a colleague at the side
    scene[H - 340:, 30:290] = small
    frames = [yuv.from_rgb(scene)] * 3
    colleague = (slice(H - 300, H - 150), slice(90, 230))

    def keyed(people: str) -> float:
        work = run(default_pipeline(*parts), frames, effect="remove", key_color="#00ff00", people=people,
                   mask_smoothing=0.0)[-1]
        assert people == "all" or len(work.faces.boxes) == 2
        rgb = yuv.to_rgb(work.output)[colleague].reshape(-1, 3).astype(int)
        return float(((rgb[:, 1] > 200) & (rgb[:, 0] < 60)).mean())

    assert keyed("all") < 0.3  # the colleague is a person: kept
    assert keyed("main") > 0.8  # only the main person stays in front


# --- plumbing ---------------------------------------------------------------------------------


def test_face_stages_off_change_nothing(parts):
    frames = portrait_over_scene(640, 360, [(0.3, 0.1)] * 2, PORTRAIT)
    work = run(default_pipeline(*parts), frames)[-1]
    assert work.output is work.image and work.faces is None


def test_tracking_alongside_on_a_helper_pool(parts):
    frames = portrait_over_scene(W, H, [(0.3, 0.1)] * 40, PORTRAIT)
    with ThreadPoolExecutor(max_workers=1) as helper:
        tracker = FaceTracker(FaceModels(), helper)
        for frame in frames[:3]:  # detection, then landmarks: each step once the last is done
            tracker.step(frame)
            tracker._in_flight.result()
        for frame in frames[3:]:  # frames faster than the models: some go untracked, none waits
            tracker.step(frame)
        tracker._in_flight.result()
    assert tracker.faces.points is not None and tracker.faces.points.shape == (468, 2)


def test_the_face_models_start_once_the_frames_stages_are_done(parts):
    """In the pipeline, a tracking step's models start after the frame's last stage (not beside
    its stages, which they slowed), and their faces reach the next frames."""
    frames = portrait_over_scene(W, H, [(0.3, 0.1)] * 6, PORTRAIT)
    with ThreadPoolExecutor(max_workers=1) as helper:
        pipeline = default_pipeline(*parts, helper=helper)
        stages, started = pipeline.stages, []

        class Last:  # the last stage: what has the tracker started by then?
            name = "last"

            def __call__(self, work):
                started.append(pipeline.stage("face").tracker.in_flight)

        pipeline.stages = [*stages, Last()]
        p = Params(effect="none", light="studio")
        found, steps = [], 0
        for frame in frames:
            work = pipeline.process(Work(image=frame, params=p))
            tracker = pipeline.stage("face").tracker
            if work.after:  # a step was due: it started after the last stage, not before
                steps += 1
                assert tracker.in_flight is not None and tracker.in_flight is not started[-1]
                tracker.in_flight.result()
            found.append(work.faces)
    assert started[0] is None and steps >= 2
    assert found[0] is None or not found[0].boxes  # the first frame's step was not done for it
    assert found[-1] is not None and found[-1].points is not None


def test_landmarks_run_only_when_the_face_moves():
    """A still face keeps its landmarks (the model runs every STILL_STEPS steps only); a moving
    one gets them every step, and they follow it."""
    from camfx.engine.faces import tracker as tracking

    models = FaceModels()
    calls = []
    landmarks = models.landmarks
    models.landmarks = lambda *args: calls.append(1) or landmarks(*args)

    def steps(frames):
        tracker = FaceTracker(models, track_every=1)
        for frame in frames:
            faces = tracker.step(frame)
        return faces

    still = steps(portrait_over_scene(W, H, [(0.3, 0.1)] * 40, PORTRAIT))
    ran_still, calls[:] = len(calls), []
    offsets = [(0.2 + 0.004 * i, 0.1) for i in range(40)]
    moving = steps(portrait_over_scene(W, H, offsets, PORTRAIT))
    ran_moving = len(calls)
    assert ran_still <= 40 / tracking.STILL_STEPS + 3  # the first landmarks, then one per STILL_STEPS
    assert ran_moving >= 35  # all but the first steps (detection)
    assert still.points is not None and moving.points is not None
    shift = (moving.points[:, 0].mean() - still.points[:, 0].mean()) / W
    assert abs(shift - (0.2 + 0.004 * 39 - 0.3)) < 0.01  # the moving face's landmarks are where it went


def test_face_params_validate():
    with pytest.raises(ParamsError, match="framing"):
        Params().updated({"framing": "zoom"})
    with pytest.raises(ParamsError, match="touch_up"):
        Params().updated({"touch_up": 1.5})
    p = Params().updated({"framing": "tight", "light": "key", "touch_up": 0.5, "people": "main",
                          "low_light": 0.3, "vignette": 0.2})
    assert (p.framing, p.light, p.people) == ("tight", "key", "main")


def test_face_params_are_cli_flags():
    import argparse

    from camfx.engine.param_flags import add_param_flags, params_from_args

    parser = argparse.ArgumentParser()
    add_param_flags(parser)
    args = parser.parse_args(["--framing", "follow", "--light", "studio", "--touch-up", "0.4", "--people", "main"])
    p = params_from_args(args)
    assert (p.framing, p.light, p.touch_up, p.people) == ("follow", "studio", 0.4, "main")


# --- over WebRTC ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("light", ["studio", "off"])  # off: the crop alone is the output
async def test_framing_and_light_over_a_real_peer(server, light):
    """A real aiortc peer sends a still off-centre face with framing tight (and studio light, or
    none): the frames that come back are cropped onto the face, and /healthz names the face
    models' runtime."""
    import aiohttp

    from camfx.bench.peer import ClientPeer, SyntheticCamera

    clip = portrait_over_scene(960, 540, [(0.04, 0.08)] * 30, 1.0)
    peer = ClientPeer(SyntheticCamera(clip), read_ids=False)
    await peer.connect(server.url, {"effect": "none", "framing": "tight", "light": light})
    try:
        await peer.wait_frames(75)  # 2.5 s: the crop has settled
        image = yuv.to_rgb(peer.received.last_frames[-1][1])
    finally:
        await peer.close()
    found = FaceModels().detect_tiled(image)
    assert found, "no face in the returned frame"
    x0, y0, x1, y1 = max(found, key=lambda face: face.score).box
    assert abs((x0 + x1) / 2 / 960 - 0.5) <= 0.08  # was at ~0.27 in the camera's frame
    assert (y1 - y0) / 540 >= 0.3  # zoomed in
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            health = await response.json()
    runtimes = health["face_runtimes"]
    assert "face_landmarks" in runtimes and "face_detector" in runtimes  # the full range: only when needed
    assert set(runtimes.values()) == {"onnxruntime:CPUExecutionProvider"}


def test_bench_engine_compares_the_face_stages(tmp_path):
    import json

    from camfx.bench.engine import main

    argv = ["--sizes", "640x360", "--effects", "none", "--frames", "10", "--out", str(tmp_path),
            "--face", "framing=tight", "light=studio", "touch_up=0.5"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "engine.json").read_text())["results"]
    assert [r["effect"] for r in rows] == ["none", "none+face"]
    face = rows[1]
    assert face["face"] == {"framing": "tight", "light": "studio", "touch_up": "0.5"}
    assert "added_p50_ms" in face and face["stages_ms"]["light"]["p50"] > 0
    assert face["cpu_stages_ms"]["light"]["p50"] > 0 and "added_cpu_p50_ms" in face
    with pytest.raises(SystemExit):
        main(["--face", "framing=zoom", "--out", str(tmp_path)])


def test_landmarks_carried_between_runs_at_the_face_speed():
    """Landmarks run every TRACK_EVERY-th frame; on the frames between, the newest ones are
    moved at the speed the face had between its last two runs, so they sit on the face in the
    frame being processed (not where it was a few frames before), and a still face's stay put."""
    from camfx.engine.faces import tracker as tracking

    models = FaceModels()
    calls = []
    landmarks = models.landmarks
    models.landmarks = lambda *args: calls.append(1) or landmarks(*args)
    step = 0.005  # of the width per frame: 6.4 px
    offsets = [(0.2 + step * i, 0.1) for i in range(30)]
    frames = portrait_over_scene(W, H, offsets, PORTRAIT)
    reference = FaceTracker(models, track_every=1)
    for frame in frames[:2]:
        found = reference.step(frame)  # detection, then this frame's landmarks
    centre_at_1 = found.points[:, 0].mean()
    tracker = FaceTracker(models)
    calls[:] = []
    errors = []
    for i, frame in enumerate(frames):
        faces = tracker.step(frame)
        if i >= 2 + 2 * tracking.TRACK_EVERY:  # two runs in: the speed is known
            expected = centre_at_1 + (offsets[i][0] - offsets[1][0]) * W
            errors.append(abs(faces.points[:, 0].mean() - expected))
            assert abs(faces.boxes[0][0] - faces.points[:, 0].min()) < 1e-3  # the box moves with them
    assert max(errors) < 3.0, errors  # against 6.4 px a frame, up to 3 frames since the last run
    assert len(calls) <= len(frames) / tracking.TRACK_EVERY + 2

    still, centres = FaceTracker(models), []
    for frame in portrait_over_scene(W, H, [(0.3, 0.1)] * 24, PORTRAIT):
        faces = still.step(frame)
        if faces.points is not None:
            centres.append(faces.points.mean(0))
    assert len(centres) >= 20 and np.abs(np.array(centres) - centres[0]).max() < 1.5  # no drift
