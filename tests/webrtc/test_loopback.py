"""Real WebRTC: an aiortc client peer sends a moving-person clip to a real camfx server over
loopback and checks the processed frames that come back."""

import asyncio
import gc
import threading
import time
import weakref

import numpy as np
import pytest

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.config import ServerConfig
from camfx.engine.media import yuv
from camfx.engine.pipeline.stages import Pipeline, default_pipeline
from camfx.engine.transport.ice import peer_connection

from ..conftest import start_server
from ..helpers import connect, matched_frame, regions

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(120)]


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_remove_keys_the_background_and_keeps_the_person(server, clip_640, segmenter, codec):
    peer = await connect(server, clip_640, {"effect": "remove", "probe": True, "key_color": "#00ff00"}, codec)
    try:
        frame_id, out = await matched_frame(peer)
        person, background = regions(clip_640, frame_id, segmenter)
        inp = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
        luma = yuv.planes(out)[0].astype(int)
        green_y = yuv.colour((0, 255, 0))[0]
        assert np.abs(luma[background] - green_y).mean() < 8  # keyed (codec noise only)
        assert np.abs(luma[person] - inp[person]).mean() < 8  # the person's own pixels
        rgb = yuv.to_rgb(out)
        g = rgb[background].astype(int)
        assert (g[:, 1] - g[:, 0]).mean() > 150 and (g[:, 1] - g[:, 2]).mean() > 150
    finally:
        await peer.close()


async def test_effects_switch_live_without_renegotiation(server, clip_640, segmenter):
    peer = await connect(server, clip_640, {"effect": "none", "probe": True})
    try:
        frame_id, out = await matched_frame(peer)
        _, background = regions(clip_640, frame_id, segmenter)
        inp = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(int)
        assert np.abs(yuv.planes(out)[0].astype(int)[background] - inp[background]).mean() < 8

        # over the control data channel
        peer.control.send('{"effect": "replace", "background": "color", "background_color": "#ff00ff"}')
        await asyncio.sleep(0.5)
        assert peer.control_messages[-1]["type"] in ("params", "stats")
        frame_id, out = await matched_frame(peer)
        _, background = regions(clip_640, frame_id, segmenter)
        magenta = yuv.to_rgb(out)[background].astype(int)
        assert (magenta[:, 0] - magenta[:, 1]).mean() > 150

        # a bad message is refused on the channel and changes nothing
        peer.control.send('{"effect": "sepia"}')
        await asyncio.sleep(0.3)
        errors = [m for m in peer.control_messages if m["type"] == "error"]
        assert errors and errors[-1]["errors"][0]["field"] == "effect"
        assert server.sessions[peer.session_id].stream.params.effect == "replace"

        # over HTTP: blur smooths the textured background
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/sessions/{peer.session_id}/params", json={"effect": "blur", "blur_strength": 30}) as r:
                assert r.status == 200
        await asyncio.sleep(0.3)
        frame_id, out = await matched_frame(peer)
        _, background = regions(clip_640, frame_id, segmenter)
        inp = yuv.planes(clip_640[frame_id % len(clip_640)])[0].astype(float)
        got = yuv.planes(out)[0].astype(float)
        import cv2

        def texture(x):  # mean high-frequency energy inside the background
            return np.abs(x - cv2.blur(x, (7, 7)))[background].mean()

        assert texture(got) < texture(inp) / 3
        # the stats the server sends once a second report the new effect (wait for the next one)
        deadline = time.perf_counter() + 5
        while not [m for m in peer.control_messages[-3:] if m["type"] == "stats" and m["effect"] == "blur"]:
            assert time.perf_counter() < deadline, "no stats message reported the effect set over HTTP"
            await asyncio.sleep(0.1)
    finally:
        await peer.close()


async def test_each_frame_comes_back_before_the_camera_sends_the_next(server, clip_640):
    """At 2 fps a frame that waited for the next one to be complete (aiortc's stock receiver)
    would come back at least half a second late; camfx decodes it as soon as it is whole."""
    peer = ClientPeer(SyntheticCamera(clip_640, fps=2.0))
    try:
        await peer.connect(server.url, {"effect": "blur", "probe": True})
        deadline = time.perf_counter() + 30
        while len(peer.received.latencies) < 8 and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)  # repeats of the last frame come between, so count fresh ones
        assert len(peer.received.latencies) >= 8, "fresh frames did not come back"
        # Back before the camera sends the next frame (aiortc's rule: at least one interval late).
        latency = float(np.median(peer.received.latencies[2:]))
        assert latency < 1 / 2.0, f"median glass-to-glass {latency * 1000:.0f} ms at 2 fps"
    finally:
        await peer.close()


class SlowStage:
    """Stands in for an effect far slower than the camera."""

    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, work) -> None:
        time.sleep(self.seconds)


async def test_latency_stays_flat_when_the_pipeline_is_slower_than_the_camera(clip_640):
    slow = 0.15  # 150 ms per frame against a 33 ms camera interval
    holder = {}

    def factory():
        pipeline = default_pipeline(holder["hub"].segmenters, holder["hub"].backgrounds, holder["hub"].helper)
        return Pipeline([*pipeline.stages, SlowStage(slow)])

    runner, server = await start_server(ServerConfig(), factory)
    holder["hub"] = server.hub
    peer = ClientPeer(SyntheticCamera(clip_640))
    try:
        await peer.connect(server.url, {"effect": "blur", "probe": True})
        await peer.wait_frames(10, timeout=30)
        await asyncio.sleep(6)
        lat = np.array(peer.received.latencies)
        session = server.sessions[peer.session_id]
        stats = session.stats()
        # Latency does not grow over time: a queue would add seconds in these six (each slow frame
        # would wait for every one before it), so the bounds leave room for a busy machine.
        early, late = np.median(lat[: len(lat) // 3]), np.median(lat[-len(lat) // 3 :])
        assert late < 1.0, f"late median latency {late:.3f}s"
        assert late < early + 0.5, f"latency grew from {early:.3f}s to {late:.3f}s"
        # Frames were dropped and counted, nothing queued, and the output kept its pace.
        assert stats["frames_dropped"] > stats["frames_in"] / 2
        assert stats["deadline_misses"] > 0
        out_rate = len([t for t in peer.received.arrivals if t > peer.received.arrivals[-1] - 3]) / 3
        assert out_rate > 10, f"output fps {out_rate:.1f}"  # repeats keep it near 20 (1.5 intervals)
    finally:
        await peer.close()
        await runner.cleanup()


async def test_sessions_free_everything_when_peers_leave(clip_640):
    runner, server = await start_server(ServerConfig(max_sessions=2, connect_timeout=1.5))
    try:
        warm_up = await connect(server, clip_640[:4], {"effect": "blur"})  # pools start their threads
        await warm_up.close()
        await asyncio.sleep(0.5)
        gc.collect()
        tasks_before = len(asyncio.all_tasks())
        threads_before = {t.name for t in threading.enumerate()}
        server_pcs = []  # weak references to the server side of every peer connection
        for _ in range(6):  # peers that connect, stream, then hang up
            peer = await connect(server, clip_640[:4], {"effect": "blur"})
            server_pcs.append(weakref.ref(server.sessions[peer.session_id].pc))
            await peer.close()
        # a peer that sends an offer and vanishes without ever connecting
        ghost = peer_connection()
        ghost.addTransceiver("video", direction="sendrecv")
        await ghost.setLocalDescription(await ghost.createOffer())
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/offer", json={"sdp": ghost.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 200
                server_pcs.append(weakref.ref(server.sessions[(await r.json())["session_id"]].pc))
        await ghost.close()

        deadline = time.perf_counter() + 10
        while server.sessions and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        assert len(server.sessions) == 0
        await asyncio.sleep(1.0)  # let aiortc's own threads wind down
        gc.collect()
        assert len(asyncio.all_tasks()) <= tasks_before
        # Any thread that appeared belongs to a bounded pool: asyncio's default executor (aiortc
        # encodes there) or camfx's two pools. Nothing per session survives.
        names = {t.name for t in threading.enumerate()}
        assert all(n.startswith(("asyncio_", "camfx-worker", "camfx-helper")) for n in names - threads_before), names
        assert len([n for n in names if n.startswith("camfx-")]) <= 2 * server.hub.config.workers
        assert [ref for ref in server_pcs if ref() is not None] == []
        metrics = server.hub.metrics
        assert metrics.sessions._value.get() == 0
    finally:
        await runner.cleanup()
