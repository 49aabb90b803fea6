"""WHIP in and WHEP out against a real server, with aiortc clients: the happy path (one
publisher, several viewers, one of them stalled), and every status code RFC 9725 and the WHEP
draft give, the ETag rules, DELETE freeing everything."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

import aiohttp
import pytest
from aiortc import RTCRtpSender

from camfx.bench.clip import person_clip
from camfx.bench.peer import SyntheticCamera
from camfx.bench.whip import WhepViewer, WhipError, WhipPublisher
from camfx.engine.config import ServerConfig
from camfx.engine.media import yuv
from camfx.engine.transport.ice import ice_server, peer_connection

from ..conftest import start_server

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(180)]

CLIP = person_clip(320, 240, 30)


async def publisher_offer(video: int = 1, audio: int = 0, codec: str | None = None) -> str:
    pc = peer_connection()
    for _ in range(video):
        transceiver = pc.addTransceiver("video", direction="sendonly")
        if codec:
            transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                             if c.mimeType == f"video/{codec}"])
    for _ in range(audio):
        pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def request(method: str, url: str, body: str | bytes | None = None, **headers):
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, data=body, headers=headers) as resp:
            return resp.status, resp.headers.copy(), await resp.text()


async def share_fresh(viewer: WhepViewer, camera: SyntheticCamera, seconds: float = 3.0) -> float:
    sent, fresh = camera.frames_sent, len(viewer.received.fresh)
    await asyncio.sleep(seconds)
    return (len(viewer.received.fresh) - fresh) / max(1, camera.frames_sent - sent)


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_publisher_and_three_viewers_one_of_them_stalled(clip_640):
    runner, server = await start_server(ServerConfig(media_timeout=2.0))
    camera = SyntheticCamera(CLIP)
    publisher = WhipPublisher(camera)
    viewers = [WhepViewer(camera.sent_at) for _ in range(2)]
    stalled = None
    try:
        await publisher.publish(f"{server.url}/whip/show?effect=remove&probe=true")
        assert re.fullmatch(rf"{server.url}/whip/show/[0-9a-f]{{32}}", publisher.location)
        assert re.fullmatch(r'"[0-9a-f]{16}"', publisher.etag)
        for viewer in viewers:
            await viewer.view(f"{server.url}/whep/show")
        stalled = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "camfx.bench.whip", "view", f"{server.url}/whep/show", stdout=asyncio.subprocess.PIPE)
        assert (await asyncio.wait_for(stalled.stdout.readline(), 60)).startswith(b"viewing ")
        for viewer in viewers:
            await viewer.wait_frames(20)
        assert len(server.sessions.viewers_of(server.sessions.named("show"))) == 3

        stalled.send_signal(signal.SIGSTOP)  # it stops reading: the server keeps sending into nothing
        shares = await asyncio.gather(*(share_fresh(v, camera) for v in viewers))
        assert all(share > 0.8 for share in shares), shares  # the others keep the camera's rate
        # What they see is the processed stream: the background keyed to green.
        _, out = viewers[0].received.last_frames[-1]
        rgb = yuv.to_rgb(out)
        green = (rgb[..., 1].astype(int) - rgb[..., 0] > 120) & (rgb[..., 1].astype(int) - rgb[..., 2] > 120)
        assert 0.2 < green[16:].mean() < 0.95

        stalled.send_signal(signal.SIGKILL)  # gone without a goodbye: its reception reports stop
        await until(lambda: len(server.sessions.viewers_of(server.sessions.named("show"))) == 2, 10,
                    "the dead viewer to be dropped")

        # DELETE ends the stream and every viewer of it.
        await publisher.close()
        publisher.location = None
        await until(lambda: len(server.sessions) == 0 and not server.sessions.viewer_ids(), 10,
                    "everything to end")
    finally:
        if stalled is not None and stalled.returncode is None:
            stalled.kill()
            await stalled.wait()
        for viewer in viewers:
            await viewer.close()
        await publisher.close()
        await runner.cleanup()


@pytest.fixture
async def whip_server(coturn):
    port, _ = coturn  # a real STUN / TURN server on loopback: the server's peers use it, no packet leaves
    config = ServerConfig(max_sessions=2, max_viewers=2, ice_servers=(
        ice_server(f"stun:127.0.0.1:{port}"), ice_server(f"turn:127.0.0.1:{port}", "camfx", "turnpass")))
    runner, server = await start_server(config)
    yield server
    await runner.cleanup()


async def test_whip_status_codes(whip_server, coturn):
    url = f"{whip_server.url}/whip/main"
    offer = await publisher_offer()
    assert (await request("POST", url, offer, **{"Content-Type": "application/json"}))[0] == 415
    assert (await request("POST", url, "v=0 nonsense", **{"Content-Type": "application/sdp"}))[0] == 400
    status, _, body = await request("POST", url, await publisher_offer(video=2), **{"Content-Type": "application/sdp"})
    assert status == 422 and "one video track" in body
    status, _, body = await request("POST", url, await publisher_offer(video=0, audio=1),
                                    **{"Content-Type": "application/sdp"})
    assert status == 422 and "no video" in body
    high = (await publisher_offer(codec="H264")).replace("42001f", "640032").replace("42e01f", "640033")
    status, _, body = await request("POST", url, high, **{"Content-Type": "application/sdp"})
    assert status == 422 and "baseline" in body
    status, _, body = await request("POST", f"{url}?effect=sepia", offer, **{"Content-Type": "application/sdp"})
    assert status == 422 and '"field": "effect"' in body
    status, _, body = await request("POST", f"{whip_server.url}/whip/bad%20name", offer, **{"Content-Type": "application/sdp"})
    assert status == 400
    assert len(whip_server.sessions) == 0  # nothing above took a slot

    status, headers, answer = await request("POST", url, await publisher_offer(audio=1), **{"Content-Type": "application/sdp"})
    assert status == 201 and headers["Content-Type"].startswith("application/sdp") and answer.startswith("v=0")
    assert "a=recvonly" in answer.split("m=audio")[0] and "a=inactive" in answer.split("m=audio")[1]  # audio declined
    assert headers["Location"].startswith("/whip/main/") and headers["ETag"]
    assert f'<stun:127.0.0.1:{coturn[0]}>; rel="ice-server"' in headers["Link"]
    assert 'username="camfx"; credential="turnpass"; credential-type="password"' in headers["Link"]
    resource, etag = f"{whip_server.url}{headers['Location']}", headers["ETag"]

    status, _, body = await request("POST", url, await publisher_offer(), **{"Content-Type": "application/sdp"})
    assert status == 409 and "already publishing" in body
    await request("POST", f"{whip_server.url}/whip/other", await publisher_offer(), **{"Content-Type": "application/sdp"})
    status, headers, _ = await request("POST", f"{whip_server.url}/whip/third", await publisher_offer(),
                                       **{"Content-Type": "application/sdp"})
    assert status == 503 and int(headers["Retry-After"]) > 0

    # Trickle ICE: If-Match is required and must match; an ICE restart is refused.
    fragment = "a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    remote = whip_server.sessions[resource.rsplit("/", 1)[1]].pc.remoteDescription.sdp
    ufrag, pwd = re.search(r"a=ice-ufrag:(\S+)", remote).group(1), re.search(r"a=ice-pwd:(\S+)", remote).group(1)
    trickle = fragment.format(u=ufrag, p=pwd) + "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    assert (await request("PATCH", resource, trickle, **sdpfrag))[0] == 428
    assert (await request("PATCH", resource, trickle, **sdpfrag, **{"If-Match": '"nope"'}))[0] == 412
    assert (await request("PATCH", resource, trickle, **sdpfrag, **{"If-Match": etag}))[0] == 204
    assert (await request("PATCH", resource, trickle, **{"Content-Type": "text/plain", "If-Match": etag}))[0] == 415
    restart = fragment.format(u="newU", p="a" * 24)
    status, _, body = await request("PATCH", resource, restart, **sdpfrag, **{"If-Match": "*"})
    assert status == 422 and "ICE restart" in body

    status, headers, _ = await request("OPTIONS", url)
    assert status == 204 and headers["Accept-Post"] == "application/sdp" and "ice-server" in headers["Link"]

    assert (await request("DELETE", resource))[0] == 200
    assert (await request("DELETE", resource))[0] == 404
    assert "main" not in whip_server.sessions.names()


async def test_whep_status_codes_and_live_params_by_name(whip_server):
    assert (await request("POST", f"{whip_server.url}/whep/nobody", "v=0", **{"Content-Type": "application/sdp"}))[0] == 404
    assert (await request("HEAD", f"{whip_server.url}/whep/nobody"))[0] == 404
    camera = SyntheticCamera(CLIP)
    publisher = WhipPublisher(camera)
    viewers = [WhepViewer(camera.sent_at) for _ in range(3)]
    try:
        await publisher.publish(f"{whip_server.url}/whip/live?effect=none&probe=true")
        assert (await request("HEAD", f"{whip_server.url}/whep/live"))[0] == 200
        for viewer in viewers[:2]:
            await viewer.view(f"{whip_server.url}/whep/live")
        with pytest.raises(WhipError) as refused:
            await viewers[2].view(f"{whip_server.url}/whep/live")
        assert refused.value.status == 503 and refused.value.headers["Retry-After"]
        await viewers[0].wait_frames(10)

        status, _, body = await request("POST", f"{whip_server.url}/streams/live/params", '{"effect": "toon"}',
                                        **{"Content-Type": "application/json"})
        assert status == 200 and '"effect": "toon"' in body
        assert whip_server.sessions.named("live").stream.params.effect == "toon"
        status, _, body = await request("POST", f"{whip_server.url}/streams/live/params", '{"toon_edges": 7}')
        assert status == 422 and '"field": "toon_edges"' in body
        status, _, body = await request("GET", f"{whip_server.url}/streams/live")
        assert status == 200 and '"viewers": 2' in body

        assert (await request("DELETE", viewers[0].location))[0] == 200
        viewers[0].location = None
        await until(lambda: len(whip_server.sessions.viewers_of(whip_server.sessions.named("live"))) == 1, 5,
                    "the viewer to go")
    finally:
        for viewer in viewers:
            await viewer.close()
        await publisher.close()


async def test_a_new_publisher_replaces_the_old_one_when_asked():
    runner, server = await start_server(ServerConfig(replace_publisher=True))
    first, second = WhipPublisher(SyntheticCamera(CLIP)), WhipPublisher(SyntheticCamera(CLIP))
    try:
        await first.publish(f"{server.url}/whip/cam")
        await second.publish(f"{server.url}/whip/cam")
        assert server.sessions.named("cam").id == second.location.rsplit("/", 1)[1]
        assert len(server.sessions) == 1
    finally:
        await first.close()
        await second.close()
        await runner.cleanup()



def green_share(image) -> float:
    """The share of the picture below the probe rows that is the key green."""
    rgb = yuv.to_rgb(image)
    green = (rgb[..., 1].astype(int) - rgb[..., 0] > 120) & (rgb[..., 1].astype(int) - rgb[..., 2] > 120)
    return float(green[16:].mean())


async def test_h264_over_whip_is_processed():
    """OBS publishes H.264 (baseline, no B-frames): decoded, processed, and viewable."""
    runner, server = await start_server(ServerConfig())
    camera = SyntheticCamera(CLIP)
    publisher, viewer = WhipPublisher(camera, codec="H264"), WhepViewer(camera.sent_at)
    try:
        await publisher.publish(f"{server.url}/whip/obs?effect=remove&probe=true")
        answer = publisher.pc.remoteDescription.sdp
        assert "H264/90000" in answer and "VP8/90000" not in answer  # what the server agreed to take
        await viewer.view(f"{server.url}/whep/obs")
        await viewer.wait_frames(20)
        await until(lambda: server.sessions.named("obs").stream.stats()["frames_in"] >= 20, 30,
                    "20 H.264 frames decoded")  # decoded from the publisher, not repeats
        assert 0.2 < green_share(viewer.received.last_frames[-1][1]) < 0.95
    finally:
        await viewer.close()
        await publisher.close()
        await runner.cleanup()


async def test_an_offer_session_is_published_under_its_name():
    """The demo page's "Publish as": an /offer session is a stream by name (WHEP, /streams), a
    second one with the name gets 409, and one without a name gets one of its own."""
    from camfx.bench.peer import ClientPeer, OfferRefused

    runner, server = await start_server(ServerConfig())
    camera = SyntheticCamera(CLIP)
    page, again, unnamed = ClientPeer(camera), ClientPeer(SyntheticCamera(CLIP)), ClientPeer(SyntheticCamera(CLIP))
    viewer = WhepViewer(camera.sent_at)
    try:
        await page.connect(server.url, {"effect": "remove", "probe": True}, name="studio")
        assert page.name == "studio"
        with pytest.raises(OfferRefused, match="409"):
            await again.connect(server.url, {}, name="studio")
        await viewer.view(f"{server.url}/whep/studio")
        await asyncio.gather(page.wait_frames(20), viewer.wait_frames(20))
        assert 0.2 < green_share(viewer.received.last_frames[-1][1]) < 0.95  # the same processed stream
        status, _, body = await request("GET", f"{server.url}/streams/studio")
        assert status == 200 and '"viewers": 1' in body
        await unnamed.connect(server.url, {})
        assert unnamed.name == "main"  # the default stream name
    finally:
        for peer in (viewer, page, again, unnamed):
            await peer.close()
        await runner.cleanup()


async def test_unnamed_sessions_get_a_stable_default_name():
    """"main" while it is free, then main-2, main-3, ...; once main ends, the next unnamed
    session (a reloaded page, or the same page after a server restart) is main again, so a
    viewer URL such as /view/main keeps working. A cluster replica keeps id-based names."""
    from camfx.engine.params import Params

    runner, server = await start_server(ServerConfig(max_sessions=4))
    sessions = server.sessions
    try:
        first, second, third = [await sessions.open(Params(), auto_name="main") for _ in range(3)]
        assert [first.name, second.name, third.name] == ["main", "main-2", "main-3"]
        await first.close()
        again = await sessions.open(Params(), auto_name="main")
        assert again.name == "main"
        await second.close()
        assert (await sessions.open(Params(), auto_name="main")).name == "main-2"
    finally:
        for session in sessions.all():
            await session.close()
        await runner.cleanup()
    runner, server = await start_server(ServerConfig(session_id_prefix="Ab3xYz90-"))
    try:
        replica = await server.sessions.open(Params(), auto_name="main")
        assert replica.name.startswith("main-") and replica.name[5:] == replica.id[len("Ab3xYz90-"):][:6]
        await replica.close()
    finally:
        await runner.cleanup()


def _tasks_of(*owners) -> list[asyncio.Task]:
    """The running tasks whose coroutine is a method of one of `owners`."""
    found = []
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and any(frame.f_locals.get("self") is owner for owner in owners):
            found.append(task)
    return found


async def test_a_publishers_and_its_viewers_tasks_are_all_gone_after_close(clip_640):
    runner, server = await start_server()
    camera = SyntheticCamera(CLIP)
    publisher, viewer = WhipPublisher(camera), WhepViewer(camera.sent_at)
    try:
        await publisher.publish(f"{server.url}/whip/tasks")
        await viewer.view(f"{server.url}/whep/tasks")
        await viewer.wait_frames(10)
        session = server.sessions.named("tasks")
        (watcher,) = [server.sessions.viewer(v) for v in server.sessions.viewer_ids()]
        owners = (session, session.stream, watcher, server.sessions)
        assert len(session.tasks) >= 2 and len(session.stream.tasks) == 2 and len(watcher.tasks) == 1
        assert len(_tasks_of(*owners)) >= 5  # the watchdogs, stats, ingest and worker run

        await publisher.close()  # DELETE: the stream ends, and its viewer with it
        publisher.location = None
        await until(lambda: len(server.sessions) == 0 and not server.sessions.viewer_ids(), 10, "everything to end")
        await until(lambda: not _tasks_of(*owners), 5, "their tasks to end")
        assert len(session.tasks) == len(session.stream.tasks) == len(watcher.tasks) == 0
        assert session.tasks.closed and session.stream.tasks.closed and watcher.tasks.closed
    finally:
        await viewer.close()
        await publisher.close()
        await runner.cleanup()
