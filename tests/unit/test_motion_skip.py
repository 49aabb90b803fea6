"""segment_skip (on by default): the model skips frames where its input barely moved and the last mask is reused;
it still looks at every moving frame, at a hand moving in one corner, after a model switch, and
at least every MAX_SKIPPED + 1 frames. Real model, real clips (a still person with sensor noise,
the swaying person)."""

import numpy as np
import pytest

from camfx.bench.clip import person_clip, still_clip
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.media.motion import MotionGate, block_change
from camfx.engine.params import Params, ParamsError
from camfx.engine.pipeline.decisions import MAX_SKIPPED
from camfx.engine.pipeline.stages import Segment, Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def segmenters():
    return Segmenters()


@pytest.fixture(scope="module")
def still():
    return still_clip(640, 480, 24)


def _run(segment: Segment, clip, params: Params) -> list[np.ndarray]:
    probabilities = []
    for frame in clip:
        work = Work(image=frame, params=params)
        segment(work)
        probabilities.append(work.probability)
    return probabilities


def test_off_runs_the_model_on_every_frame(segmenters, still):
    segment = Segment(segmenters)
    _run(segment, still, Params(effect="blur", segment_skip=0))
    assert (segment.schedule.calls, segment.schedule.reused) == (len(still), 0)


def test_on_by_default(segmenters, still):
    """On by default: `camfx bench segment-skip` shows flicker lower and lag, IoU, boundary F and
    halo unchanged on the quality bench's clips."""
    segment = Segment(segmenters)
    _run(segment, still, Params(effect="blur"))
    assert Params().segment_skip == 4 and segment.schedule.reused > 0


def test_a_still_person_costs_one_model_call_in_four(segmenters, still):
    segment = Segment(segmenters)
    probabilities = _run(segment, still, Params(effect="blur"))
    assert segment.schedule.calls == len(still) // (MAX_SKIPPED + 1)
    assert segment.schedule.reused == len(still) - segment.schedule.calls
    # A skipped frame takes the very mask the model made for the last frame it saw.
    for i, probability in enumerate(probabilities):
        assert probability is probabilities[i - i % (MAX_SKIPPED + 1)]


def test_the_reused_mask_matches_the_one_the_model_would_make(segmenters, still):
    """On a still person the model's own mask for a skipped frame is the reused one, within noise."""
    reused = _run(Segment(segmenters), still[:2], Params(effect="blur", segment_skip=4, model="landscape"))[1]
    fresh = segmenters.get("landscape")(still[1])
    iou = ((reused > 0.5) & (fresh > 0.5)).sum() / ((reused > 0.5) | (fresh > 0.5)).sum()
    assert iou > 0.99


def test_a_moving_person_gets_the_model_on_every_frame(segmenters):
    clip = person_clip(640, 480, 20)
    segment = Segment(segmenters)
    _run(segment, clip, Params(effect="blur", segment_skip=4))
    assert (segment.schedule.calls, segment.schedule.reused) == (len(clip), 0)


def test_a_hand_moving_in_one_corner_counts(segmenters, still):
    """A change in one block of the model's input is enough, however still the rest is."""
    moved = still[1].copy()
    moved[8:40, 8:40] = 255 - moved[8:40, 8:40]  # about 13 x 13 model pixels at 144 x 256
    segment = Segment(segmenters)
    params = Params(effect="blur", segment_skip=4)
    _run(segment, [still[0], moved], params)
    assert (segment.schedule.calls, segment.schedule.reused) == (2, 0)


def test_a_model_switch_runs_the_new_model(segmenters, still):
    segment = Segment(segmenters)
    first = _run(segment, still[:2], Params(effect="blur", segment_skip=4, model="landscape"))
    switched = _run(segment, still[2:3], Params(effect="blur", segment_skip=4, model="general"))[0]
    assert first[1] is first[0] and switched.shape != first[0].shape  # the general model's own map
    assert segment.schedule.calls == 2


def test_effects_without_a_mask_do_not_count(segmenters, still):
    segment = Segment(segmenters)
    _run(segment, still[:4], Params(effect="none", segment_skip=4))
    assert (segment.schedule.calls, segment.schedule.reused) == (0, 0)


def test_the_pipeline_output_on_skipped_frames_uses_the_reused_mask(segmenters, still):
    """Through the whole pipeline: a skipped frame is composited, from its own pixels, with the
    last mask; the output differs from the input where the background is blurred."""
    pipeline = default_pipeline(segmenters, Backgrounds())
    params = Params(effect="blur", segment_skip=4)
    first = pipeline.process(Work(image=still[0], params=params))
    second = pipeline.process(Work(image=still[1], params=params))
    assert second.probability is first.probability
    assert not np.array_equal(second.output, still[1])
    assert not np.array_equal(second.output, first.output)


def test_block_change_and_gate_directly():
    a = np.full((144, 256, 3), 100, np.uint8)
    b = a.copy()
    b[:16, :16] += 5  # one block, by 5 levels
    assert block_change(a, a) == 0 and block_change(a, b) == 5
    gate = MotionGate(max_skipped=2)
    assert gate.must_run(a, 3)  # nothing seen yet
    assert not gate.must_run(a, 3) and not gate.must_run(a, 3)
    assert gate.must_run(a, 3)  # two skipped in a row: look again
    assert gate.must_run(b, 3)  # moved
    assert gate.must_run(b, 0)  # off


@pytest.mark.parametrize("bad", [-1, 33, "x"])
def test_bad_values_are_refused(bad):
    with pytest.raises(ParamsError) as info:
        Params().updated({"segment_skip": bad})
    assert info.value.errors[0]["field"] == "segment_skip"


def test_the_device_pipeline_skips_the_same_frames(segmenters, still):
    """The device pipeline (here on the CPU device) gates the model the same way."""
    from camfx.engine.pipeline.device import DevicePipeline

    backgrounds = Backgrounds()
    opencv = default_pipeline(segmenters, backgrounds)
    device = DevicePipeline(segmenters, backgrounds, default_pipeline(segmenters, backgrounds), "cpu")
    params = Params(effect="blur", segment_skip=4)
    moved = still[5].copy()
    moved[8:40, 8:40] = 255 - moved[8:40, 8:40]
    clip = [*still[:5], moved, *still[6:10]]
    for frame in clip:
        a = opencv.process(Work(image=frame, params=params))
        b = device.process(Work(image=frame, params=params))
        assert np.abs(a.output.astype(int) - b.output).mean() < 0.5
    assert device.model_calls() == opencv.model_calls() == {"calls": 4, "reused": 6}


def test_a_latency_probe_stamping_its_rows_does_not_count_as_motion(segmenters, still):
    """With `probe` on, the top rows carry a frame id that changes every frame: not motion."""
    stamped = []
    for i, frame in enumerate(still[:8]):
        frame = frame.copy()
        frame[:16] = (i * 37) % 256  # a different stamp on every frame
        stamped.append(frame)
    probed, plain = Segment(segmenters), Segment(segmenters)
    _run(probed, stamped, Params(effect="blur", segment_skip=4, probe=True))
    _run(plain, stamped, Params(effect="blur", segment_skip=4))
    assert probed.schedule.calls == 2 and plain.schedule.calls == len(stamped)
