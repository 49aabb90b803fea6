"""The device pipeline (frames kept on a torch device; on a GPU, CUDA) run here on the CPU:
the same pictures as the OpenCV pipeline, and a real WebRTC session through it."""

import numpy as np
import pytest

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine import yuv
from camfx.engine.backgrounds import Backgrounds
from camfx.engine.device_pipeline import DevicePipeline
from camfx.engine.params import Params
from camfx.engine.pipeline import Work, default_pipeline
from camfx.engine.segmenter import Segmenters
from camfx.engine.server import ServerConfig, resolve_device

from .conftest import start_server
from .test_loopback import matched_frame, regions, segmenter  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def pipelines():
    segmenters, backgrounds = Segmenters(), Backgrounds()
    opencv = default_pipeline(segmenters, backgrounds)
    return opencv, DevicePipeline(segmenters, backgrounds, default_pipeline(segmenters, backgrounds), "cpu")


@pytest.mark.parametrize("effect", ["blur", "replace", "remove"])
@pytest.mark.parametrize("mask_mode", ["soft", "threshold"])
def test_device_pipeline_gives_the_opencv_pictures(pipelines, clip_640, effect, mask_mode):
    opencv, device = pipelines
    params = Params(effect=effect, mask_mode=mask_mode, probe=True)
    for frame in clip_640[::7]:
        expected = opencv.process(Work(image=frame, params=params)).output.astype(int)
        work = device.process(Work(image=frame, params=params))
        diff = np.abs(work.output.astype(int) - expected)
        # Hard (threshold) edges flip on a few pixels where the two paths round differently.
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= (4 if mask_mode == "soft" else 8), diff.mean()
        assert np.array_equal(work.output[:16], frame[:16])  # probe rows
        assert set(work.timings) == {"upload", "segment", "effect", "download"}


def test_other_effects_go_to_the_opencv_pipeline(pipelines, clip_640):
    opencv, device = pipelines
    for effect in ("none", "toon"):
        params = Params(effect=effect)
        out = device.process(Work(image=clip_640[0], params=params)).output
        assert np.array_equal(out, opencv.process(Work(image=clip_640[0], params=params)).output)


def test_device_choice():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"  # no GPU on this machine
    with pytest.raises(ValueError, match="no CUDA GPU|auto, cpu or cuda"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")


async def test_a_webrtc_session_through_the_device_pipeline(clip_640, segmenter):  # noqa: F811
    segmenters, backgrounds = Segmenters(), Backgrounds()
    runner, server = await start_server(
        ServerConfig(), lambda: DevicePipeline(segmenters, backgrounds, default_pipeline(segmenters, backgrounds), "cpu")
    )
    peer = ClientPeer(SyntheticCamera(clip_640), codec="VP8")
    try:
        await peer.connect(server.url, {"effect": "remove", "probe": True})
        await peer.wait_frames(20)
        frame_id, out = await matched_frame(peer)
        person, background = regions(clip_640, frame_id, segmenter)
        camera = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
        luma = yuv.planes(out)[0].astype(int)
        assert np.abs(luma[background] - yuv.colour((0, 255, 0))[0]).mean() < 8
        assert np.abs(luma[person] - camera[person]).mean() < 8
    finally:
        await peer.close()
        await runner.cleanup()
