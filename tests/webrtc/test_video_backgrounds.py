"""Video backgrounds and fit modes: real videos made with PyAV, uploaded, probed, played on their
decoder thread and composited by the real pipeline; bad videos get a JSON 4xx."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import aiohttp
import av
import cv2
import numpy as np
import pytest

from camfx.engine.config import ServerConfig
from camfx.engine.effects import filters as effects, fit
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.effects.video_background import Clip, scaled_picture
from camfx.engine.media import yuv
from camfx.engine.params import Params
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import Work, default_pipeline

from ..conftest import start_server
from ..helpers import (
    FPS,
    FakeClock,
    connect,
    header_only_webm,
    make_offer,
    make_video,
    matched_frame,
    regions,
    show,
)

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(120)]

# ---- fit modes ------------------------------------------------------------------------------------

def test_cover_is_the_former_cover():
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    for h, w in [(180, 320), (480, 640), (720, 1280), (300, 500)]:
        assert np.array_equal(fit.fit_image(rgb, h, w, "cover"), effects.cover(rgb, h, w))


@pytest.mark.parametrize("shape", [(200, 200), (100, 400)], ids=["pillarbox", "letterbox"])
def test_contain_shows_the_whole_picture_on_bars_of_the_background_colour(shape):
    image = np.zeros((*shape, 3), np.uint8)
    image[...] = (220, 30, 30)
    colour = (20, 200, 90)
    h, w = 180, 320
    out = fit.fit_image(image, h, w, "contain", colour)
    y, u, v = yuv.planes(out)
    bar_y, bar_u, bar_v = yuv.colour(colour)
    red_y = yuv.colour((220, 30, 30))[0]
    if shape == (200, 200):  # 180 x 180 in the middle, bars of 70 px left and right
        bars, middle = (np.s_[:, :66], np.s_[:, -66:]), np.s_[:, 74:-74]
    else:  # 80 x 320 in the middle, bars of 50 px above and below
        bars, middle = (np.s_[:46, :], np.s_[-46:, :]), np.s_[54:-54, :]
    for bar in bars:
        assert (y[bar] == bar_y).all()
        half = tuple(slice(None if s.start is None else s.start // 2, None if s.stop is None else s.stop // 2)
                     for s in bar)
        assert (u[half] == bar_u).all() and (v[half] == bar_v).all()
    assert (np.abs(y[middle].astype(int) - red_y) <= 1).all()
    covered = fit.fit_image(image, h, w, "cover", colour)
    assert (np.abs(yuv.planes(covered)[0].astype(int) - red_y) <= 1).all()  # cover: no bars at all


def test_background_fit_is_a_param_and_a_flag():
    import argparse

    from camfx.engine.param_flags import add_param_flags, params_from_args

    assert Params().background_fit == "cover"
    parser = argparse.ArgumentParser()
    add_param_flags(parser)
    assert params_from_args(parser.parse_args(["--background-fit", "contain"])).background_fit == "contain"
    with pytest.raises(SystemExit):
        parser.parse_args(["--background-fit", "stretch"])


# ---- playback -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mp4", "webm", "gif"])
def test_a_video_plays_by_the_clock_and_loops_frame_accurately(kind):
    clock = FakeClock()
    backgrounds = Backgrounds(clock=clock)
    name = backgrounds.add_upload(make_video(kind, frames=12))
    clip = backgrounds._uploads[name]
    assert isinstance(clip, Clip) and clip.frames == 12
    view = (90, 160, "cover", (0, 0, 0))
    try:
        first = backgrounds.frame(name, *view)  # before any decoding: the first frame, at once
        assert np.array_equal(first, scaled_picture(clip.first, view))
        numbers = [0, 1, 5, 11, 12, 13, 17, 23, 24, 29]
        shown = {number: show(backgrounds, clock, name, number, view) for number in numbers}
        assert np.array_equal(shown[0], first)
        for number in [0, 1, 5, 11]:  # frame N + length is frame N
            assert np.array_equal(shown[number], shown[number + 12])
        assert np.array_equal(shown[5], shown[29])
        # The picture changes from frame to frame, the last one to the first of the next loop too.
        for a, b in [(0, 1), (1, 5), (5, 11), (11, 12)]:
            assert np.abs(shown[a].astype(int) - shown[b].astype(int)).mean() > 2, (a, b)
    finally:
        backgrounds.close()


def test_each_size_in_use_is_scaled_to_and_the_frame_path_never_waits(monkeypatch):
    clock = FakeClock()
    backgrounds = Backgrounds(clock=clock)
    name = backgrounds.add_upload(make_video("mp4", frames=12, w=96, h=48))
    small, wide = (90, 160, "cover", (0, 0, 0)), (120, 120, "contain", (255, 0, 255))
    try:
        a = show(backgrounds, clock, name, 3, small)
        b = show(backgrounds, clock, name, 3, wide)  # a new size: the frame due now is scaled to it too
        assert yuv.frame_size(a) == (90, 160) and yuv.frame_size(b) == (120, 120)
        assert (yuv.planes(b)[0][:20] == yuv.colour((255, 0, 255))[0]).all()  # contain's bars
        # Hold the decoder in its work and move the clock on: the frame path answers at once,
        # with the newest picture it has.
        player, release, real_place = backgrounds.player(name), threading.Event(), fit.place

        def held_place(*args):
            if threading.current_thread().name.startswith("camfx-video-"):
                release.wait(10)
            return real_place(*args)

        monkeypatch.setattr(fit, "place", held_place)
        clock.now = player.started + 9.5 / FPS
        done = threading.Event()
        threading.Thread(target=lambda: (backgrounds.frame(name, *small), done.set())).start()
        try:
            assert done.wait(5)
            assert player.current(small)[0] < 9
        finally:
            release.set()
    finally:
        backgrounds.close()


def test_decoders_stop_after_disuse_and_are_capped():
    backgrounds = Backgrounds(idle_stop_s=0.3, max_players=1)
    first = backgrounds.add_upload(make_video("mp4"))
    second = backgrounds.add_upload(make_video("webm"))
    view = (48, 64, "cover", (0, 0, 0))
    try:
        backgrounds.frame(first, *view)
        player = backgrounds.player(first)
        assert player is not None and backgrounds.live_decoders() == 1
        # At the cap the second video shows its first frame, and no second decoder starts.
        still = scaled_picture(backgrounds._uploads[second].first, view)
        assert np.array_equal(backgrounds.frame(second, *view), still)
        assert backgrounds.player(second) is None and backgrounds.live_decoders() == 1
        deadline = time.monotonic() + 10
        while player.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not player.alive
        assert not [t for t in threading.enumerate() if t.name == f"camfx-video-{first}"]
        assert backgrounds.live_decoders() == 0
        backgrounds.frame(second, *view)  # the slot is free again
        assert backgrounds.player(second) is not None
    finally:
        backgrounds.close()
    assert backgrounds.live_decoders() == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("camfx-video-")]


def test_replace_with_a_video_changes_the_background_and_keeps_the_person(clip_640):
    clock = FakeClock()
    segmenters, backgrounds = Segmenters(), Backgrounds(clock=clock)
    name = backgrounds.add_upload(make_video("mp4", frames=12, w=160, h=120))
    params = Params(effect="replace", background_image=name)
    frame = clip_640[0]
    h, w = yuv.frame_size(frame)
    try:
        outputs = []
        for number in (2, 8):
            layer = show(backgrounds, clock, name, number, (h, w, "cover", (0, 0, 0)))
            work = default_pipeline(segmenters, backgrounds).process(Work(image=frame, params=params))
            outputs.append((layer, work))
        (layer_a, a), (layer_b, b) = outputs
        assert np.array_equal(a.alpha, b.alpha)
        # Where the mask is whole, 2 px in from where it is not (the edge band's blend aside).
        alpha8 = cv2.resize(cv2.convertScaleAbs(a.alpha, alpha=255.0), (w, h), interpolation=cv2.INTER_LINEAR)
        kernel = np.ones((5, 5), np.uint8)
        person = cv2.erode((alpha8 == 255).astype(np.uint8), kernel) > 0
        background = cv2.erode((alpha8 == 0).astype(np.uint8), kernel) > 0
        assert person.mean() > 0.1 and background.mean() > 0.2
        ya, yb, y_in = (yuv.planes(x)[0].astype(int) for x in (a.output, b.output, frame))
        assert np.array_equal(ya[person], yb[person])  # the person, untouched by the video
        assert np.array_equal(ya[person], y_in[person])
        assert np.abs(ya[background] - yb[background]).mean() > 10  # the background moved on
        assert (np.abs(ya[background] - yuv.planes(layer_a)[0][background]) <= 1).all()
        assert (np.abs(yb[background] - yuv.planes(layer_b)[0][background]) <= 1).all()
    finally:
        backgrounds.close()


# ---- over HTTP ------------------------------------------------------------------------------------

@pytest.fixture
async def lenient_server():
    """A server whose upload rate limit does not get in the way of several uploads."""
    runner, server = await start_server(ServerConfig(upload_burst=20))
    yield server
    await runner.cleanup()


async def upload(server, data: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/backgrounds", data=data) as resp:
        return resp.status, await resp.json()


async def test_uploaded_videos_are_listed_thumbnailed_and_used(lenient_server):
    server = lenient_server
    ids = {}
    for kind in ("mp4", "gif"):
        status, body = await upload(server, make_video(kind))
        assert status == 201, body
        ids[kind] = body["id"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/backgrounds") as resp:
            listed = await resp.json()
        assert set(listed) == {"bundled", "uploaded", "items"}
        assert {"studio", "sunset", "office"} <= set(listed["bundled"])
        items = {item["id"]: item for item in listed["items"]}
        assert items[ids["mp4"]] == {"id": ids["mp4"], "kind": "video", "bundled": False}
        assert items[ids["gif"]]["kind"] == "video"
        assert items["studio"] == {"id": "studio", "kind": "image", "bundled": True}
        assert any(item["kind"] == "video" and item["bundled"] for item in listed["items"])  # one bundled video
        for item in listed["items"]:
            async with http.get(f"{server.url}/backgrounds/{item['id']}/thumbnail") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
                thumb = cv2.imdecode(np.frombuffer(await resp.read(), np.uint8), cv2.IMREAD_COLOR)
                assert thumb.shape == (90, 160, 3)
        async with http.get(f"{server.url}/backgrounds/u-nothing/thumbnail") as resp:
            assert resp.status == 404 and "no background" in (await resp.json())["error"]
        # The page's bundled previews are /static/backgrounds/NAME.jpg: a bundled video has one too.
        async with http.get(f"{server.url}/static/backgrounds/lights.jpg") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        async with http.get(f"{server.url}/static/backgrounds/{ids['mp4']}.jpg") as resp:
            assert resp.status == 404
    pc, sdp = await make_offer()
    params = {"effect": "replace", "background_image": ids["mp4"], "background_fit": "contain"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/offer", json={"sdp": sdp, "type": "offer", "params": params}) as resp:
            body = await resp.json()
    await pc.close()
    assert resp.status == 200, body


BAD_VIDEOS = {
    "truncated": (lambda: (lambda data: data[: len(data) // 2])(make_video("mp4", frames=24)), "readable"),
    "truncated index": (lambda: make_video("mp4", frames=24)[:-300], "complete"),
    "no frames": (header_only_webm, "first frame"),
    "too many pixels": (lambda: make_video("mp4", frames=2, w=2000, h=1200), "1920x1080"),
    "too long": (lambda: make_video("webm", frames=62, w=16, h=16, fps=1), "60 s"),
    "too many streams": (lambda: make_video("webm", frames=2, w=16, h=16, streams=9), "streams"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
async def test_bad_videos_get_a_json_400_that_says_why(lenient_server, case):
    make, words = BAD_VIDEOS[case]
    status, body = await upload(lenient_server, make())
    assert status == 400 and words in body["error"], body
    assert body["request_id"] and "Errno" not in body["error"] and "av." not in body["error"]
    assert not lenient_server.hub.backgrounds.names()["uploaded"]


def blink_video(seconds_each: float = 1.0, fps: int = 4) -> bytes:
    """A video that is dark grey for a second, then light grey for a second, looped."""
    out = io.BytesIO()
    count = int(seconds_each * fps)
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(2 * count):
            grey = np.full((48, 64, 3), 40 if i < count else 210, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


async def test_replace_with_a_video_over_webrtc_changes_the_background_not_the_person(server, clip_640):

    status, body = await upload(server, blink_video())
    assert status == 201, body
    segmenter = Segmenters().get("landscape")
    peer = await connect(server, clip_640, {"effect": "replace", "background_image": body["id"], "probe": True})
    try:
        backgrounds, person_errors = [], []
        for _ in range(8):  # 2.4 s: both halves of the loop
            frame_id, out = await matched_frame(peer)
            person, background = regions(clip_640, frame_id, segmenter)
            luma = yuv.planes(out)[0].astype(int)
            inp = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
            backgrounds.append(luma[background].mean())
            person_errors.append(float(np.median(np.abs(luma[person] - inp[person]))))
            await asyncio.sleep(0.3)
        assert min(backgrounds) < 70 and max(backgrounds) > 180, backgrounds  # dark, then light
        # The person's own pixels, but for codec noise (which grows for a frame or two each time
        # the whole background flips).
        assert max(person_errors) <= 6 and np.mean(person_errors) <= 3, person_errors
    finally:
        await peer.close()
