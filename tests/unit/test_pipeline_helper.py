"""The frame-only work (the mask's guide, the background layer) made on a helper thread gives the
same pictures as made inline, and a helper that shuts down first leaves nothing waiting."""

import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import pytest

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.pipeline.budget import LADDER
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import PrepareBackground, Work, default_pipeline
from camfx.engine.pipeline.segmenter import Segmenters

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def parts():
    return Segmenters(), Backgrounds()


@pytest.mark.parametrize("effect", ["blur", "replace", "remove"])
@pytest.mark.parametrize("quality", [LADDER[0], LADDER[1]], ids=["feather", "no-feather"])
def test_helper_thread_gives_the_inline_pictures(parts, clip_640, effect, quality):
    params = Params(effect=effect, mask_feather=6, probe=True)
    with ThreadPoolExecutor(2) as helper:
        on_helper = default_pipeline(*parts, helper)
        inline = default_pipeline(*parts)
        for frame in clip_640[:3]:
            a = on_helper.process(Work(image=frame, params=params, quality=quality))
            b = inline.process(Work(image=frame, params=params, quality=quality))
            assert (a.guide is not None) == quality.feather
            assert np.array_equal(a.alpha, b.alpha) and np.array_equal(a.output, b.output)


def test_feathering_changes_the_mask(parts, clip_640):
    """The guide the helper makes is used: with it the mask follows the picture's edges."""
    with ThreadPoolExecutor(2) as helper:
        pipeline = default_pipeline(*parts, helper)
        feathered = pipeline.process(Work(image=clip_640[0], params=Params(effect="blur", mask_feather=8)))
        plain = pipeline.process(Work(image=clip_640[0], params=Params(effect="blur", mask_feather=0)))
    assert np.abs(feathered.alpha - plain.alpha).max() > 0.05


def test_a_helper_shut_down_before_running_cancels_what_it_owed(parts, clip_640):
    helper = ThreadPoolExecutor(1)
    release = threading.Event()
    helper.submit(release.wait, 10)  # the only helper thread is busy
    work = Work(image=clip_640[0], params=Params(effect="blur", mask_feather=4))
    PrepareBackground(parts[1], helper)(work)
    helper.shutdown(wait=False, cancel_futures=True)
    release.set()
    for future in (work.guide, work.background):
        with pytest.raises(CancelledError):
            future.result(timeout=5)
