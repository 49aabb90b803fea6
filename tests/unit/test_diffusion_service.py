"""The device's diffusion service on tiny models: one batch restyles several streams, each as it
would be alone; a stream that fails (a prompt too long, weights missing) gets its error and
the others their pictures. Driven batch by batch on a simulated clock (no thread, no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from camfx.engine.diffusion.served import DiffusionModels, DiffusionModelSpec
from camfx.engine.diffusion.service import DiffusionService, Job, StreamDiffusion, budget_of, rungs_of
from camfx.engine.diffusion.simulated import SimClock
from camfx.engine.diffusion.stylizer import Stylizer
from camfx.engine.media import yuv
from camfx.engine.metrics import Metrics
from camfx.engine.params import Params, ParamsError

from ..tiny_diffusion import MAX_TOKENS

pytestmark = pytest.mark.unit

SIZE = 64


@pytest.fixture(scope="module")
def models(tiny_repo, tmp_path_factory):
    repo, taesd = tiny_repo
    return DiffusionModels({"tiny": DiffusionModelSpec(repo, taesd_id=taesd),
                            "absent": DiffusionModelSpec(str(tmp_path_factory.mktemp("none") / "no-model"))},
                           exported=False)


def _params(**kw) -> Params:
    return Params(effect="diffusion", diffusion_mode="frame", diffusion_model="tiny", diffusion_size=128, **kw)


def _frame(seed: int):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def _open(service, params, seed):
    handle = service.scheduler.open(params.diffusion_model, rungs_of(params), budget_of(params))
    state = StreamDiffusion(service.models, service._metrics)
    frame = _frame(seed)
    handle.offer(Job(state, frame, None, params, (SIZE, SIZE)), 0.0, (params.diffusion_model, SIZE, SIZE))
    return handle, state, frame


def test_one_batch_restyles_each_stream_as_it_would_be_alone(models):
    service = DiffusionService(models, Metrics(), clock=SimClock())
    settings = [_params(prompt="a cat", seed=1), _params(prompt="a dog", seed=2, steps=2, strength=0.7)]
    opened = [_open(service, p, i) for i, p in enumerate(settings)]
    batch = service.scheduler.next_batch(0.0)
    assert len(batch.entries) == 2  # one batch, both streams
    pictures, errors = service._run(batch)
    service.scheduler.done(batch, pictures, errors, now=0.01)
    assert not errors
    parts = models.load("tiny").parts
    for (handle, state, frame), p in zip(opened, settings):
        alone = Stylizer(parts, prompt=p.prompt, seed=p.seed, steps=p.steps, strength=p.strength)
        expected = alone.img2img(yuv.model_input(frame, SIZE, SIZE))
        got = handle.latest.rgb
        assert int(np.abs(got.astype(int) - expected.astype(int)).max()) <= 1
        assert handle.stats(0.01)["batch_size"] == 2.0 and state.status == "running"


def test_a_failing_stream_gets_its_error_and_the_others_their_pictures(models):
    metrics = Metrics()
    service = DiffusionService(models, metrics, clock=SimClock())
    good = _open(service, _params(prompt="a cat"), 0)
    too_long = _open(service, _params(prompt="cat " * MAX_TOKENS), 1)
    batch = service.scheduler.next_batch(0.0)
    pictures, errors = service._run(batch)
    service.scheduler.done(batch, pictures, errors, now=0.01)
    assert good[0].latest is not None and too_long[0].latest is None
    assert too_long[1].status == "error" and "tokens" in too_long[1].error
    assert too_long[1].notices[0][0] == "prompt"
    assert metrics.diffusion_errors._value.get() == 1
    # Weights that are not there: the same, and the good stream's next picture still comes.
    missing = _open(service, Params(effect="diffusion", diffusion_model="absent", diffusion_size=128), 2)
    good[0].offer(Job(good[1], _frame(3), None, _params(prompt="a cat"), (SIZE, SIZE)), 0.05, ("tiny", SIZE, SIZE))
    while (batch := service.scheduler.next_batch(0.1)) is not None:
        service.scheduler.done(batch, *service._run(batch), now=0.11)
    assert missing[1].status == "error" and missing[1].notices[0][0] == "diffusion_model"
    assert good[1].serial == 2


def test_a_param_change_the_device_cannot_hold_is_a_422_naming_the_limit(models):
    clock = SimClock()
    service = DiffusionService(models, clock=clock)
    for _ in range(30):  # what the device costs: 0.1 s per 256x256 picture
        service.scheduler.cost.add(1, 0.25, 0.1)
    first = service.scheduler.open("tiny", rungs_of(_params()), budget_of(_params(diffusion_fps=4)))
    service.check(_params(diffusion_fps=4))  # a second stream at 4 fps fits
    with pytest.raises(ParamsError) as err:
        service.check(_params(diffusion_fps=60))
    assert err.value.errors[0]["field"] == "diffusion_fps" and "busy" in err.value.errors[0]["message"]
    first.close()
    service.check(_params(diffusion_fps=60))  # alone it would get the device



async def test_a_new_session_the_device_cannot_hold_is_a_503_with_retry_after():
    from camfx.engine.config import ServerConfig
    from camfx.engine.hub import Hub
    from camfx.engine.transport.errors import HTTPError
    from camfx.engine.transport.registry import Sessions

    hub = Hub(ServerConfig())
    try:
        scheduler = hub.diffusion.scheduler
        for _ in range(30):  # a device that takes 1 s per 256x256 picture
            scheduler.cost.add(1, 0.25, 1.0)
        held = scheduler.open("x", rungs_of(_params()), budget_of(_params(diffusion_fps=1)))
        sessions = Sessions(hub)
        with pytest.raises(HTTPError) as err:
            await sessions.open(_params(diffusion_fps=30))
        assert err.value.status == 503 and int(err.value.headers["Retry-After"]) > 0
        assert "diffusion_fps" in err.value.message
        assert len(sessions) == 0  # no slot taken
        held.close()  # its share is free at once: now a session is admitted
        session = await sessions.open(_params(diffusion_fps=30))
        await session.close()
    finally:
        hub.shutdown()


def test_the_stylize_stage_offers_frames_and_lets_go_when_the_effect_changes(models, monkeypatch):
    from camfx.engine.diffusion.stage import Stylize
    from camfx.engine.pipeline.stages import Work

    service = DiffusionService(models, clock=SimClock())
    monkeypatch.setattr(service, "_start", lambda: None)  # batches are run by hand here
    stage = Stylize(service)
    assert stage.stats() == {"diffusion": None}
    work = Work(image=_frame(0), params=_params(prompt="a cat"))
    stage(work)
    assert service.scheduler.streams == 1 and work.stylized is None
    batch = service.scheduler.next_batch(0.0)
    assert batch.key == ("tiny", 128, 128) and batch.entries[0].payload.size == (128, 128)  # diffusion_size
    service.scheduler.done(batch, *service._run(batch), now=0.01)
    again = Work(image=_frame(1), params=_params(prompt="a cat"))
    stage(again)
    assert again.stylized is stage.latest and stage.frames == 1
    stats = stage.stats()["diffusion"]
    assert stats["status"] == "running" and stats["rung"] == "128px 1 step" and stats["pictures"] == 1
    stage(Work(image=_frame(2), params=Params(effect="blur")))
    assert service.scheduler.streams == 0 and stage.stats() == {"diffusion": None}  # its share is free


def test_a_frame_that_comes_after_the_stream_closed_takes_no_slot(models, monkeypatch):
    """The stream closes its pipeline while the worker thread may still be carrying a frame
    through it: that frame must not open a new slot that nobody would ever give back."""
    from camfx.engine.diffusion.stage import Stylize
    from camfx.engine.pipeline.stages import Work

    service = DiffusionService(models, clock=SimClock())
    monkeypatch.setattr(service, "_start", lambda: None)
    stage = Stylize(service)
    stage(Work(image=_frame(0), params=_params(prompt="a cat")))
    assert service.scheduler.streams == 1
    stage.close()
    assert service.scheduler.streams == 0
    late = Work(image=_frame(1), params=_params(prompt="a cat"))
    stage(late)  # the frame that was on its way
    assert service.scheduler.streams == 0 and late.stylized is None and stage.stats() == {"diffusion": None}
