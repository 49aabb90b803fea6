"""The `diffusion` effect in a real camfx server: parameters over HTTP and the control channel,
and a real aiortc loopback session on tiny offline models whose generation is made far slower
than the camera, to show that the camera's frame rate does not depend on it."""

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.config import ServerConfig
from camfx.engine.diffusion import stylizer as stylizer_module
from camfx.engine.diffusion.picture import diffusion_size
from camfx.engine.diffusion.served import DiffusionModelSpec
from camfx.engine.diffusion.stylizer import Stylizer
from camfx.engine.effects import filters as effects
from camfx.engine.effects import compose
from camfx.engine.media import yuv

from ..conftest import start_server
from ..helpers import matched_frame, regions
from ..tiny_diffusion import MAX_TOKENS

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(180)]

SLOW_S = 0.6  # each generated picture takes at least this long: 18 camera frames


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"diffusion_model": "someone/unknown-model"}, "diffusion_model"),
        ({"steps": 0}, "steps"),
        ({"steps": 5}, "steps"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "word " * 200}, "prompt"),
        ({"strength": 0}, "strength"),
        ({"diffusion_size": 500}, "diffusion_size"),
        ({"diffusion_mode": "sideways"}, "diffusion_mode"),
    ],
)
async def test_bad_diffusion_params_get_422_naming_the_field(server, patch, field):
    body = {"sdp": "v=0", "type": "offer", "params": {"effect": "diffusion", **patch}}
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/offer", json=body) as resp:
        assert resp.status == 422
        errors = (await resp.json())["errors"]
    assert [e["field"] for e in errors] == [field]
    if field == "diffusion_model":
        assert "stabilityai/sd-turbo" in errors[0]["message"]  # says what is served


def test_diffusion_size_keeps_the_frame_shape():
    assert diffusion_size((480, 640), 512) == (384, 512)
    assert diffusion_size((720, 1280), 512) == (288, 512)
    assert diffusion_size((720, 1280), 128) == (72, 128)


@pytest.fixture
def slow_generation(monkeypatch):
    """Every generated picture (every batch) takes at least SLOW_S, as full-size models do on a CPU."""

    def slowed(real):
        def slow(*args, **kwargs):
            start = time.perf_counter()
            out = real(*args, **kwargs)
            time.sleep(max(0.0, SLOW_S - (time.perf_counter() - start)))
            return out
        return slow

    monkeypatch.setattr(Stylizer, "txt2img", slowed(Stylizer.txt2img))
    monkeypatch.setattr(stylizer_module, "img2img_batch", slowed(stylizer_module.img2img_batch))


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _fresh_share(peer, seconds: float) -> float:
    """Of the frames the camera sent in `seconds`, the share that came back processed: the camera's
    rate held whatever the machine's speed (a rate in fps would fail on a busy one)."""
    sent, fresh = peer.camera.frames_sent, len(peer.received.fresh)
    await asyncio.sleep(seconds)
    return (len(peer.received.fresh) - fresh) / max(1, peer.camera.frames_sent - sent)


async def test_diffusion_session_keeps_the_camera_rate_and_follows_live_changes(
    tiny_repo, clip_640, segmenter, slow_generation  # noqa: F811
):
    repo, taesd = tiny_repo
    config = ServerConfig(diffusion_models={"tiny": DiffusionModelSpec(repo, taesd_id=taesd)})
    runner, server = await start_server(config)
    peer = ClientPeer(SyntheticCamera(clip_640), codec="VP8")
    params = {
        "effect": "diffusion", "diffusion_mode": "backdrop", "diffusion_model": "tiny",
        "diffusion_size": 128, "prompt": "a cat", "probe": True,
    }
    try:
        await peer.connect(server.url, params)
        await peer.wait_frames(10)
        session = server.sessions[peer.session_id]
        worker = session.stream.stage("stylize")
        await _until(lambda: worker.frames >= 1, 30, "a backdrop")

        # Backdrop: the generated picture behind the camera's person, at the camera's rate.
        backdrop = worker.latest
        frame_id, out = await matched_frame(peer)
        person, background = regions(clip_640, frame_id, segmenter)
        camera = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
        layer = yuv.planes(effects.cover(backdrop.rgb, 480, 640))[0].astype(int)
        luma = yuv.planes(out)[0].astype(int)
        assert np.abs(luma[person] - camera[person]).mean() < 8
        assert np.abs(luma[background] - layer[background]).mean() < 8
        assert np.abs(luma[background] - camera[background]).mean() > 20  # it did change

        # A prompt change over the control channel: re-encoded and regenerated, no reload.
        parts = server.hub.diffusion_models.load("tiny").parts
        peer.control.send('{"prompt": "a dog"}')
        await _until(lambda: worker.latest.serial > backdrop.serial, 10, "the new prompt's backdrop")
        assert not np.array_equal(worker.latest.rgb, backdrop.rgb)
        assert server.hub.diffusion_models.load("tiny").parts is parts

        # Background mode: img2img of every frame it can take, each one slow (SLOW_S).
        peer.control.send('{"diffusion_mode": "background", "strength": 0.8}')
        await _until(lambda: worker.latest.mode == "background", 10, "a stylized background")
        share = await _fresh_share(peer, 2.0)
        assert share > 2 / 3, f"only {share:.0%} of the camera's frames came back while generating at {1 / SLOW_S:.1f}"
        assert worker.stats()["diffusion"]["fps"] <= 1 / SLOW_S + 0.2
        frame_id, out = await matched_frame(peer)
        person, background = regions(clip_640, frame_id, segmenter)
        camera = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
        layer = yuv.planes(compose.layer("background", worker.latest.rgb, 480, 640))[0].astype(int)
        luma = yuv.planes(out)[0].astype(int)
        assert np.abs(luma[person] - camera[person]).mean() < 8  # the person is the camera's
        # The background is the newest picture (made from an earlier frame while this one came).
        assert np.abs(luma[background] - layer[background]).mean() < 12

        # A backdrop from the room: remade continuously from the camera, person painted out.
        peer.control.send('{"diffusion_mode": "backdrop", "backdrop_source": "room"}')
        await _until(lambda: worker.latest.mode == "backdrop", 10, "a room backdrop")
        first = worker.latest.serial
        await _until(lambda: worker.latest.serial >= first + 2, 10, "the room backdrop to refresh")
        assert await _fresh_share(peer, 1.0) > 2 / 3

        # Bad input over HTTP and the channel: clear errors, the session keeps running.
        url = f"{server.url}/sessions/{peer.session_id}/params"
        async with aiohttp.ClientSession() as http:
            for patch, field in [
                ({"steps": 7}, "steps"),
                ({"diffusion_model": "nope"}, "diffusion_model"),
                ({"prompt": "cat " * MAX_TOKENS}, "prompt"),  # too many tokens for this encoder
            ]:
                async with http.post(url, json=patch) as resp:
                    assert resp.status == 422, patch
                    assert [e["field"] for e in (await resp.json())["errors"]] == [field]
        peer.control.send('{"prompt": "' + "dog " * MAX_TOKENS + '"}')
        await _until(
            lambda: any(m.get("type") == "error" and m["errors"][0]["field"] == "prompt" for m in peer.control_messages),
            5, "the channel's error",
        )
        assert session.stream.params.prompt == "a dog"
        assert await _fresh_share(peer, 1.0) > 2 / 3
        stats = await _until_stats(peer)
        diffusion = stats["diffusion"]
        assert diffusion["status"] == "running" and diffusion["frames"] >= 3
        assert set(diffusion["stage_ms"]) == {"encode", "unet", "decode"}
        # How the scheduler serves it: alone, auto rate = what the device holds it at.
        # Well under the camera's 30: what this slow device holds (its exact rate is timing).
        assert diffusion["target"] == "auto" and 0 < diffusion["target_fps"] < 5
        assert diffusion["batch_size"] == 1.0 and diffusion["rung"] == "128px 1 step"
        assert 0 < diffusion["age_ms_p50"] <= diffusion["age_ms_p95"] <= diffusion["max_age_ms"] + 1000 * SLOW_S

        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            metrics = await resp.text()
        assert 'camfx_diffusion_stage_seconds_count{stage="unet"}' in metrics
        assert "camfx_diffusion_busy_share " in metrics and 'camfx_diffusion_stream_target_fps{stream="' in metrics
        pictures = server.hub.metrics.diffusion_pictures._value.get()
        assert pictures >= worker.frames >= 3

        await peer.close()  # hanging up ends the session and its diffusion worker's task
        await _until(lambda: not server.sessions, 10, "the session to end")
        assert session.closed.is_set() and session.stream.closed
        mine = ("Stream.", "PeerSession.")
        assert server.hub.diffusion.scheduler.streams == 0  # its share is free
        assert not [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith(mine)]
    finally:
        await peer.close()
        await runner.cleanup()


def _last_stats(peer) -> dict | None:
    return next((m for m in reversed(peer.control_messages) if m.get("type") == "stats"), None)


async def _until_stats(peer) -> dict:
    """The next stats message (they come every second)."""
    before = _last_stats(peer)
    await _until(lambda: _last_stats(peer) is not before, 5, "stats")
    return _last_stats(peer)


async def test_missing_weights_are_reported_and_the_stream_goes_on(tmp_path, clip_640):
    config = ServerConfig(diffusion_models={"absent": DiffusionModelSpec(str(tmp_path / "no-such-model"))})
    runner, server = await start_server(config)
    peer = ClientPeer(SyntheticCamera(clip_640), codec="VP8")
    try:
        await peer.connect(server.url, {"effect": "diffusion", "diffusion_model": "absent"})
        await peer.wait_frames(10)
        await _until(
            lambda: any(m.get("type") == "error" for m in peer.control_messages), 30, "the load error"
        )
        error = next(m for m in peer.control_messages if m.get("type") == "error")["errors"][0]
        assert error["field"] == "diffusion_model"
        assert "no-such-model" in error["message"] and "--random-weights" in error["message"]
        assert server.hub.metrics.diffusion_errors._value.get() == 1
        assert await _fresh_share(peer, 1.0) > 2 / 3  # the camera's picture goes on meanwhile
        # Now the server knows: asking for the model again is a 422 with the same message.
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/sessions/{peer.session_id}/params", json={"steps": 2}) as resp:
                assert resp.status == 422
                assert "no-such-model" in (await resp.json())["errors"][0]["message"]
    finally:
        await peer.close()
        await runner.cleanup()


def test_without_the_diffusion_extra_the_effect_is_a_422_saying_what_to_install(monkeypatch):
    import importlib.util

    from camfx.engine.diffusion.served import DiffusionModels
    from camfx.engine.params import Params, ParamsError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    models = DiffusionModels()
    models.check(Params(effect="blur"))  # other effects do not care
    with pytest.raises(ParamsError) as err:
        models.check(Params(effect="diffusion"))
    assert err.value.errors[0]["field"] == "effect"
    assert "pip install 'camfx[diffusion]'" in err.value.errors[0]["message"]


def test_room_backdrop_paints_the_person_out():
    from camfx.engine.diffusion.picture import StylizedPicture, room_without_person

    rng = np.random.default_rng(0)
    room = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    alpha = np.zeros((32, 48), np.float32)
    alpha[8:24, 16:32] = 1.0  # the person, at work resolution
    assert np.array_equal(room_without_person(room, None, None), room)
    out = room_without_person(room, alpha, None)
    assert np.array_equal(out[:8], room[:8]) and np.array_equal(out[:, :24], room[:, :24])  # room kept
    inside = out[20:44, 36:60].astype(int)
    assert np.abs(inside - room[20:44, 36:60]).mean() > 40  # the person's area is filled...
    assert inside.std() < room.std() / 3  # ...with something smooth (a blur of the room)
    previous = np.full_like(room, 77)
    out = room_without_person(room, alpha, StylizedPicture(previous, "backdrop", 1))
    assert (out[20:44, 36:60] == 77).all()  # later, with the last backdrop
