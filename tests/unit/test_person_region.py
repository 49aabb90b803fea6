"""The segmentation model looks at a region around the person (pipeline.person_region): its
shape and place, when it is kept and when the whole frame is looked at again, the model's input
cut from it, its mask placed back; and, with the real model on the quality bench's person, a
closer mask than the whole frame gives, and a second person coming in is found."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camfx.bench.quality_clips import _place, background, person_rgba
from camfx.engine.effects.mask import work_size
from camfx.engine.faces.framing import cut_window
from camfx.engine.media import yuv
from camfx.engine.params import Params
from camfx.engine.pipeline import person_region as pr
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import Segment, Work

pytestmark = pytest.mark.unit

FRAME = (720, 1280)
SQUARE = (256, 256)


def _mask(box, area=None, size=SQUARE) -> np.ndarray:
    """A model's output over `area` (frame pixels; the whole frame by default) at `size`: 1 in
    `box` (frame pixels), 0 elsewhere."""
    ax0, ay0, ax1, ay1 = area or (0, 0, FRAME[1], FRAME[0])
    sx, sy = size[1] / (ax1 - ax0), size[0] / (ay1 - ay0)
    out = np.zeros(size, np.float32)
    x0, y0, x1, y1 = box
    out[max(0, round((y0 - ay0) * sy)):max(0, round((y1 - ay0) * sy)),
        max(0, round((x0 - ax0) * sx)):max(0, round((x1 - ax0) * sx))] = 1
    return out


def _thumb(value: int = 100) -> np.ndarray:
    return np.full((pr.THUMB_ROWS, 64), value, np.uint8)


def test_the_region_has_the_models_shape_and_holds_the_person_with_a_margin():
    box = (500, 100, 800, 720)  # a person standing in the middle third, cut by the bottom
    x0, y0, x1, y1 = pr.fit(box, FRAME, SQUARE)
    assert (x1 - x0, y1 - y0) == (720, 720)  # the square, as high as the frame allows
    assert x0 <= 500 - pr.MARGIN * 620 + pr.ALIGN and x1 >= 800 + pr.MARGIN * 620 - pr.ALIGN
    assert 0 <= x0 and x1 <= 1280 and 0 <= y0 and y1 <= 720
    assert x0 % pr.ALIGN == 0 and y0 % pr.ALIGN == 0
    # The landscape model's shape is 16:9.
    x0, y0, x1, y1 = pr.fit((600, 300, 700, 500), FRAME, (144, 256))
    assert abs((x1 - x0) / (y1 - y0) - 256 / 144) < 0.1
    # A small, far-away person is not zoomed in on beyond MIN_HEIGHT of the frame.
    x0, y0, x1, y1 = pr.fit((630, 340, 650, 380), FRAME, SQUARE)
    assert y1 - y0 >= pr.MIN_HEIGHT * 720 - pr.ALIGN
    # Someone who fills the frame: the whole frame.
    assert pr.fit((40, 20, 1240, 720), FRAME, SQUARE) is None


def test_a_region_is_found_kept_while_still_and_dropped_for_change_outside_it():
    region = pr.PersonRegion()
    assert region.region(_thumb()) is None  # nothing known yet: the whole frame
    region.update(_mask((500, 200, 800, 720)), FRAME, None)
    first = region.region(_thumb())
    assert first is not None and first[0] <= 500 and first[2] >= 800
    # A mask a few pixels off (the model's jitter) keeps the region: the model's input stays still.
    region.update(_mask((496, 204, 806, 720), first), FRAME, first)
    assert region.region(_thumb()) == first
    # A change inside the region alone keeps it.
    inside = _thumb()
    inside[10:20, 30:34] = 200
    assert region.region(inside) == first
    # A change outside it (someone coming in at the left): the whole frame, this once.
    outside = inside.copy()
    outside[10:20, 0:3] = 200
    assert region.region(outside) is None
    # ...unless it is in the rows a latency probe stamps.
    region.update(_mask((500, 200, 800, 720)), FRAME, None)
    region.region(outside)
    top = outside.copy()
    top[0, 0:3] = 0
    assert region.region(top, skip_rows=1) is not None
    # Nobody in the mask: the whole frame.
    region.update(np.zeros(SQUARE, np.float32), FRAME, first)
    assert region.region(top) is None


def test_a_mask_that_reaches_the_regions_side_widens_the_next_region_there():
    region = pr.PersonRegion()
    region.region(_thumb())  # the first frame's: the whole frame
    region.update(_mask((560, 300, 720, 720)), FRAME, None)
    looked = region.region(_thumb())
    x0, y0, x1, y1 = looked
    # The person goes on past the region's right side: the mask stops at it.
    region.update(_mask((560, 300, x1, 720), looked), FRAME, looked)
    widened = region.region(_thumb())
    assert widened[2] > x1


def test_the_models_input_is_cut_from_the_region_exactly(portrait):
    big = yuv.resize(portrait, 720, 1280, interpolation=cv2.INTER_LINEAR)
    region = (320, 0, 1040, 720)
    from_halvings = yuv.model_input(big, 256, 256, yuv.Halvings(big), region)
    planes = cut_window(big, (region[1], region[0]), (region[3] - region[1], region[2] - region[0]))
    cut = np.concatenate([p.reshape(-1) for p in planes]).reshape(-1, 720)
    from_cut = yuv.model_input(cut, 256, 256)
    assert np.abs(from_halvings.astype(int) - from_cut).max() <= 1
    whole = yuv.model_input(big, 256, 256)
    assert np.abs(from_halvings.astype(int) - whole).mean() > 10  # not the whole frame squashed


def test_the_regions_mask_is_placed_back_where_it_came_from():
    region = (320, 96, 1040, 720)
    size = work_size(FRAME, SQUARE)
    probability = np.zeros(SQUARE, np.float32)
    probability[:, 128:] = 1  # the region's right half is the person
    out = pr.placed(probability, region, FRAME, size)
    assert out.shape == size
    sx, sy = size[1] / 1280, size[0] / 720
    row = round(400 * sy)
    edge = int(np.argmax(out[row] > 0.5))
    assert abs(edge / sx - 680) <= 1.5 / sx  # the middle of the region, 680 px
    assert out[:, : round(320 * sx) - 1].max() == 0 and out[:, round(1040 * sx) + 1:].max() == 0
    assert out[: round(96 * sy) - 1].max() == 0  # nothing above it
    assert out[row, round(1000 * sx)] == pytest.approx(1.0)


def _scene(people: list[float], height: int = 720, width: int = 1280):
    """The bench's person at each centre x in `people` over the busy room: (I420, true alpha)."""
    rgba = person_rgba()
    rgb = background("busy", height, width)
    alpha = np.zeros((height, width), np.float32)
    for cx in people:
        colour, a = _place(rgba, height, width, cx, 1.0)
        rgb = colour + (1 - a[..., None]) * rgb
        alpha = np.maximum(alpha, a)
    return yuv.from_rgb(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)), alpha


def _edge_error(probability: np.ndarray, truth: np.ndarray) -> float:
    """Mean abs error of the probability (brought to the truth's size) within 24 px of the edge."""
    full = cv2.resize(probability, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
    person = (truth > 0.5).astype(np.uint8)
    near = cv2.dilate(person, np.ones((49, 49), np.uint8)) - cv2.erode(person, np.ones((49, 49), np.uint8))
    return float(np.abs(full - truth)[near > 0].mean())


@pytest.fixture(scope="module")
def segmenters():
    return Segmenters()


def test_the_real_model_in_the_region_follows_the_edge_closer_than_on_the_whole_frame(segmenters):
    frame, truth = _scene([800.0])
    params = Params(effect="blur", segment_skip=0)
    segment = Segment(segmenters)
    for _ in range(3):  # the whole frame first, then the region found from it
        work = Work(image=frame, params=params)
        segment(work)
    assert segment.region.current is not None
    whole = segmenters.get(params.model)(frame)
    in_region, on_whole = _edge_error(work.probability, truth), _edge_error(whole, truth)
    assert in_region < 0.75 * on_whole, (in_region, on_whole)


def test_someone_coming_in_beside_the_region_is_found(segmenters):
    params = Params(effect="blur", segment_skip=0)
    segment = Segment(segmenters)
    alone, _ = _scene([900.0])
    for _ in range(3):
        work = Work(image=alone, params=params)
        segment(work)
    region = segment.region.current
    assert region is not None and region[0] > 300
    two, truth = _scene([900.0, 220.0])  # a second person at the left, outside the region
    work = Work(image=two, params=params)
    segment(work)
    prob = work.probability
    h, w = prob.shape
    newcomer = prob[h // 2:, : round(330 * w / 1280)]  # her body, left of the region
    assert newcomer.mean() > 0.5
    work = Work(image=two, params=params)  # the frame after: both still in the mask
    segment(work)
    assert work.probability[h // 2:, : round(330 * w / 1280)].mean() > 0.5


def test_an_empty_room_gets_no_region_and_the_whole_frame_check_drops_a_stale_one():
    region = pr.PersonRegion()
    region.region(_thumb())
    # A few blobs of texture the model took for a person, on the whole frame: no region.
    texture = _mask((600, 300, 640, 340)) + _mask((900, 200, 940, 230))
    region.update(texture, FRAME, None)
    assert region.region(_thumb()) is None
    # In a region, a mask that barely fills it: the whole frame next.
    region.update(_mask((500, 100, 800, 720)), FRAME, None)
    looked = region.region(_thumb())
    assert looked is not None
    region.update(_mask((600, 300, 640, 340), looked), FRAME, looked)
    assert region.region(_thumb()) is None
    # ...and for QUIET_CALLS whole-frame calls no region is made again (an empty room's texture,
    # looked at whole and zoomed in on in turn, would make the mask jump), then it is.
    for _ in range(pr.QUIET_CALLS):
        region.update(_mask((500, 100, 800, 720)), FRAME, None)
        assert region.region(_thumb()) is None
    region.update(_mask((500, 100, 800, 720)), FRAME, None)
    assert region.region(_thumb()) is not None
    # The check every CHECK_EVERY calls: the region stays while the whole frame's mask is in it,
    # and goes when it finds nobody, or someone beyond it.
    region = pr.PersonRegion()
    region.region(_thumb())
    region.update(_mask((500, 100, 800, 720)), FRAME, None)
    looked = region.region(_thumb())
    assert looked is not None
    assert sum(region.wants_check() for _ in range(pr.CHECK_EVERY)) == 1
    region.check(_mask((520, 120, 780, 720)), FRAME)
    assert region.region(_thumb()) == looked
    region.check(_mask((100, 300, 200, 720)) + _mask((520, 120, 780, 720)), FRAME)
    assert region.region(_thumb()) is None
    region.update(_mask((500, 100, 800, 720)), FRAME, None)
    assert region.region(_thumb()) == looked
    region.check(np.zeros(SQUARE, np.float32), FRAME)
    assert region.region(_thumb()) is None


def test_mask_region_off_looks_at_the_whole_frame_and_on_again_finds_her(segmenters):
    frame, _ = _scene([800.0])
    segment = Segment(segmenters)
    work = Work(image=frame, params=Params(effect="blur", segment_skip=0, mask_region=False))
    segment(work)
    assert segment.region.current is None
    assert np.array_equal(work.probability, segmenters.get(Params().model)(frame))  # the model's own map
    work = Work(image=frame, params=Params(effect="blur", segment_skip=0))
    segment(work)
    assert segment.region.current is not None and work.probability.shape == work_size(FRAME, SQUARE)
    segment(Work(image=frame, params=Params(effect="blur", segment_skip=0, mask_region=False)))
    assert segment.region.current is None  # let go at once


def test_bench_engine_compares_the_region_with_the_whole_frame(tmp_path):
    import json

    from camfx.bench.engine import main

    argv = ["--sizes", "640x360", "--effects", "blur", "--frames", "10", "--model", "general", "--out", str(tmp_path),
            "--compare", "mask_region=false"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "engine.json").read_text())["results"]
    assert [r["effect"] for r in rows] == ["blur", "blur+mask_region=false"]
    assert rows[1]["compared"] == {"mask_region": "false"} and "added_p50_ms" in rows[1]
    for bad in (["--compare", "mask_region=maybe"], ["--face", "framing=tight", "--compare", "mask_region=false"]):
        with pytest.raises(SystemExit):
            main([*bad, "--out", str(tmp_path)])
