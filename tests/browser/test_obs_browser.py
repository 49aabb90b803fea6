"""camfx as OBS and remote users meet it, in headless Chromium with a fake camera: a WHIP / WHEP
client camfx did not write (the npm package whip-whep, installed by .ci/run into tests/web)
publishing from and viewing on a page of another origin, the /view overlay page turning the key
colour into real transparency, TURN through Debian's coturn started here, and https with a
self-signed certificate and a token."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from playwright import sync_api

from camfx.bench.clip import person_clip, write_y4m
from camfx.engine.config import ServerConfig
from camfx.engine.transport import tls
from camfx.engine.transport.ice import ice_server

from ..chromium import PUBLISH_PAGE, WHIP_WHEP, launch
from ..server_thread import ServerThread

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

WAIT_MS = 30_000
TOKEN = "obs-test-token"
WATCH_PAGE = """<!doctype html><meta charset="utf-8"><title>viewer</title>
<video id="v" autoplay muted playsinline width="640" height="480"></video><canvas id="c" width="64" height="48"></canvas>
<script type="module">
import { WHEPClient } from "/lib/whep.js";
window.frames = 0;
const video = document.getElementById("v");
const tick = () => { window.frames += 1; video.requestVideoFrameCallback(tick); };
video.requestVideoFrameCallback(tick);
window.view = async (url, token) => {
  const pc = new RTCPeerConnection({ iceServers: [] });  // explicit: no STUN, loopback only
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); });
  const client = new WHEPClient();
  await client.view(pc, url, token);
  window.viewer = { pc, client };
};
// The picture as 64x48 RGB, to check what the stream shows.
window.pixels = () => {
  const c = document.getElementById("c").getContext("2d");
  c.drawImage(video, 0, 0, 64, 48);
  return Array.from(c.getImageData(0, 0, 64, 48).data);
};
window.ready = true;
</script>"""


class PagesServer:
    """Another origin: the third-party client library and the pages that use it."""

    def __init__(self, loop_owner: ServerThread):
        self._owner = loop_owner
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _start(self) -> None:
        app = web.Application()
        for path, text in (("/publish.html", PUBLISH_PAGE), ("/watch.html", WATCH_PAGE)):
            async def page(request, text=text):
                return web.Response(text=text, content_type="text/html")

            app.router.add_get(path, page)
        app.router.add_static("/lib", str(WHIP_WHEP))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def start(self) -> "PagesServer":
        self._owner.call(self._start())
        return self

    def stop(self) -> None:
        self._owner.call(self._runner.cleanup())


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("camera") / "person.y4m", person_clip(640, 480, 30))


@pytest.fixture(scope="module")
def playwright():
    runner = sync_api.sync_playwright().start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def browser(playwright, camera_file):
    browser = launch(playwright, camera_file)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server():
    running = ServerThread(ServerConfig(token=TOKEN, max_sessions=3, connect_timeout=15.0)).start()
    pages = PagesServer(running).start()
    running.pages = pages
    yield running
    pages.stop()
    running.stop()


def new_page(browser, url: str, **context):
    page = browser.new_context(viewport={"width": 640, "height": 480}, **context).new_page()
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.goto(url)
    return page


def publish(browser, server, name: str, query: str = "") -> sync_api.Page:
    page = new_page(browser, f"{server.pages.url}/publish.html")
    page.wait_for_function("() => window.ready === true", timeout=WAIT_MS)
    resource = page.evaluate("([url, token]) => window.publish(url, token)",
                             [f"{server.url}/whip/{name}{query}", TOKEN])
    assert f"/whip/{name}/" in resource
    deadline = time.monotonic() + 30
    while not (server.get(f"/streams/{name}")["fps_in"] > 10):
        assert time.monotonic() < deadline, "the published stream does not reach camfx"
        time.sleep(0.2)
    return page


def test_a_third_party_whip_client_publishes_and_a_whep_client_views(browser, server):
    publisher = publish(browser, server, "obs", "?effect=remove&key_color=%2300ff00")
    viewer = new_page(browser, f"{server.pages.url}/watch.html")
    try:
        viewer.wait_for_function("() => window.ready === true", timeout=WAIT_MS)
        viewer.evaluate("([url, token]) => window.view(url, token)", [f"{server.url}/whep/obs", TOKEN])
        viewer.wait_for_function("() => window.frames > 60", timeout=WAIT_MS)
        rgb = np.array(viewer.evaluate("() => window.pixels()"), dtype=int).reshape(48, 64, 4)[..., :3]
        green = (rgb[..., 1] - rgb[..., 0] > 100) & (rgb[..., 1] - rgb[..., 2] > 100)
        assert 0.2 < green.mean() < 0.95, green.mean()  # the background keyed, the person kept
        assert green[:4].mean() > 0.9 and green[:, -6:].mean() > 0.9  # above the head, the right edge
        assert (~green[8:30]).mean() > 0.15  # the person, wherever the sway has taken her
        stats = server.get("/streams/obs")
        assert stats["viewers"] == 1 and stats["effect"] == "remove"
        # The client trickled its candidates: PATCH with the ETag it was given worked.
        assert not publisher.problems and not viewer.problems, publisher.problems + viewer.problems
        publisher.evaluate("() => window.unpublish()")
        deadline = time.monotonic() + 10
        while "obs" in server.get("/streams"):
            assert time.monotonic() < deadline, "DELETE did not end the stream"
            time.sleep(0.2)
    finally:
        viewer.context.close()
        publisher.context.close()


def test_the_overlay_page_is_transparent_where_the_background_was(browser, server):
    publisher = publish(browser, server, "overlay", "?effect=remove")
    overlay = new_page(browser, f"{server.url}/view/overlay?transparent=1&status=0&token={TOKEN}")
    try:
        overlay.wait_for_function("() => window.camfxViewer && window.camfxViewer.frames > 60", timeout=WAIT_MS)
        overlay.evaluate("() => { document.documentElement.style.background = '#ff00ff'; }")
        overlay.wait_for_timeout(300)
        import cv2

        shot = cv2.imdecode(np.frombuffer(overlay.screenshot(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
        magenta = (shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] > 200)
        green = (shot[..., 1] - shot[..., 0] > 80) & (shot[..., 1] - shot[..., 2] > 80)
        h, w = magenta.shape
        assert magenta[int(h * 0.02):int(h * 0.12)].mean() > 0.9  # above the head: see-through
        assert (~magenta[int(h * 0.85):int(h * 0.98)]).mean() > 0.35  # the suit, half the width: not
        assert 0.2 < magenta.mean() < 0.85
        assert green.mean() < 0.01  # no key colour left anywhere, soft edges included
        assert overlay.evaluate("() => window.camfxViewer.key") == "#00ff00"  # the stream's own key colour
    finally:
        overlay.context.close()
        publisher.context.close()


def test_the_view_page_waits_for_a_stream_that_is_not_there_yet(browser, server):
    overlay = new_page(browser, f"{server.url}/view/later?token={TOKEN}")
    try:
        overlay.wait_for_function("() => document.getElementById('status').textContent.includes('Waiting')",
                                  timeout=WAIT_MS)
        publisher = publish(browser, server, "later")
        overlay.wait_for_function("() => window.camfxViewer.frames > 30", timeout=WAIT_MS)
        publisher.context.close()
    finally:
        overlay.context.close()


# ---- TURN ------------------------------------------------------------------------------------------
def test_frames_flow_through_turn_when_the_browser_may_only_relay(browser, coturn):
    port, log = coturn
    config = ServerConfig(ice_servers=(ice_server(f"turn:127.0.0.1:{port}?transport=udp", "camfx", "turnpass"),))
    running = ServerThread(config).start()
    page = new_page(browser, f"{running.url}/?ice=relay")
    try:
        page.wait_for_function("() => window.camfx && window.camfx.ready === true", timeout=WAIT_MS)
        page.click("#start")
        page.wait_for_function("() => window.camfx.status === 'live'", timeout=WAIT_MS)
        page.wait_for_function("() => window.camfx.lastStats && window.camfx.lastStats.framesDecoded > 60",
                               timeout=WAIT_MS)
        pair = page.evaluate("""async () => {
            const stats = [...(await window.camfx.pc.getStats()).values()];
            const pair = stats.find((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
            const local = stats.find((s) => s.id === pair.localCandidateId);
            return { type: local.candidateType, bytes: pair.bytesReceived };
        }""")
        assert pair["type"] == "relay" and pair["bytes"] > 50_000, pair  # the media went through coturn
        page.evaluate("() => window.camfx.stop()")
        running.wait_sessions(0, timeout=10)
    finally:
        page.context.close()
        running.stop()


# ---- https and a token ------------------------------------------------------------------------------
def test_the_page_over_https_with_a_self_signed_certificate_and_a_token(playwright, camera_file, tmp_path):
    cert, key = tls.self_signed(tmp_path)
    running = ServerThread(ServerConfig(token=TOKEN), ssl_context=tls.server_context(cert, key)).start()
    browser = launch(playwright, camera_file, "--ignore-certificate-errors")  # the test's own certificate
    try:
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept(TOKEN))  # the page asks for the token once
        page.goto(running.url + "/")
        page.wait_for_function("() => window.camfx && window.camfx.ready === true", timeout=WAIT_MS)
        assert page.evaluate("() => window.isSecureContext") and running.url.startswith("https://")
        page.click("#start")
        page.wait_for_function("() => window.camfx.status === 'live'", timeout=WAIT_MS)
        page.wait_for_function("() => window.camfx.lastStats && window.camfx.lastStats.framesDecoded > 30",
                               timeout=WAIT_MS)
        page.evaluate("() => window.camfx.stop()")
        running.wait_sessions(0, timeout=10)
    finally:
        browser.close()
        running.stop()

