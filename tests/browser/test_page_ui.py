"""The control UI shared by `camfx serve`'s page and `camfx camera`'s control page, in headless
Chromium against real servers: the same groups from /params/schema on both, only the controls
that apply, sliders that show their values, the background picker and its uploads, presets
(in the browser and on the server), the folded details, the picture as the hero at a desktop
and a phone size (screenshots kept under $CAMFX_ARTIFACTS, default test-artifacts/), and the
/view page's state while a stream comes and goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

from camfx.bench.latency import free_port  # noqa: E402
from camfx.engine.client.app import CameraApp  # noqa: E402
from camfx.engine.client.control import control_app  # noqa: E402
from camfx.engine.client.local import LocalProcessor  # noqa: E402
from camfx.engine.client.sources import open_source  # noqa: E402
from camfx.engine.config import ServerConfig  # noqa: E402
from camfx.engine.params import Params  # noqa: E402
from camfx.engine.transport import http_server  # noqa: E402

from ..server_thread import ServerThread  # noqa: E402

WAIT_MS = 30_000
ARTIFACTS = Path(os.environ.get("CAMFX_ARTIFACTS", Path(__file__).resolve().parent.parent.parent / "test-artifacts"))
SIZES = [(1280, 800), (390, 844)]


class CameraThread:
    """`camfx camera`'s engine and control server (a looped file in, no outputs but the page's
    preview) on a loop of its own, for the synchronous Playwright API."""

    def __init__(self, camera_file: Path, params: Params):
        self.camera_file, self.params = camera_file, params
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="camfx-camera", daemon=True)
        self.url = ""

    def start(self) -> "CameraThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    async def _start(self) -> None:
        source = open_source(str(self.camera_file), loop=True)
        self.app = CameraApp(source, LocalProcessor(ServerConfig(), self.params), [])
        await self.app.processor.start(source.track)
        self.pump = asyncio.ensure_future(self.app._pump())  # run_until_done's signal handlers need the main thread
        port = free_port()
        self.runner = await http_server.start(control_app(self.app, "127.0.0.1"), "127.0.0.1", port)
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        self.app.stop_event.set()
        self.pump.cancel()
        await asyncio.gather(self.pump, return_exceptions=True)
        await self.runner.cleanup()
        self.app.source.close()
        await self.app.processor.close()

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def camera(camera_file):
    running = CameraThread(camera_file, Params(effect="blur")).start()
    yield running
    running.stop()


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(url: str, width: int = 1280, height: int = 800, ready: str = "window.camfx && window.camfx.ready"):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
        page.goto(url)
        page.wait_for_function(f"() => {ready}", timeout=WAIT_MS)
        return page

    yield make
    for context in contexts:
        try:
            context.pages[0].evaluate("() => window.camfx && window.camfx.pc ? window.camfx.stop() : null")
        except Exception:  # a page of the camera or viewer has no session to stop
            pass
        context.close()


CAMERA_READY = "window.camfxCamera && window.camfxCamera.ready"


def groups_on(page) -> list[tuple[str, list[str]]]:
    return page.eval_on_selector_all(
        "#controls details.group",
        "gs => gs.map(g => [g.dataset.group, [...g.querySelectorAll('.field')].map(f => f.dataset.field)])")


def applies(when, params) -> bool:
    return not when or any(all(params.get(f) in values for f, values in alt.items()) for alt in when)


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def assert_picture_is_the_hero(page, width: int, height: int) -> None:
    picture = page.locator("#picture").bounding_box()
    stats = page.locator("#stats-panel").bounding_box()
    controls = page.locator(".controls").bounding_box()
    if width >= 1000:  # beside the controls: most of the width, most of the height
        assert picture["width"] >= 0.6 * width and picture["height"] >= 0.55 * height, picture
        assert picture["width"] > 2 * controls["width"]
    else:  # a phone: the full width, first thing under the bar
        assert picture["width"] >= width - 2 and picture["y"] < 0.45 * height, picture
        assert controls["y"] >= picture["y"] + picture["height"]
    assert stats["height"] <= 60, stats  # folded: one line
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width


# ---- tests ------------------------------------------------------------------------------------
def test_both_pages_show_the_same_groups_from_the_schema_and_the_picture_is_the_hero(new_page, server, camera):
    schema = server.get("/params/schema")
    published = [(g["name"], g["fields"]) for g in schema["x-camfx-ui"]["groups"]]
    assert [name for name, _ in published][:3] == ["Effect", "Background", "Diffusion"]
    assert camera.get("/params/schema")["x-camfx-ui"]["groups"] == schema["x-camfx-ui"]["groups"]

    for width, height in SIZES:
        serve = new_page(server.url + "/", width, height)
        assert [(n, f) for n, f in groups_on(serve)] == published
        assert serve.locator("#stats-panel").get_attribute("open") is None  # the details: one click away
        offers = []
        serve.on("request", lambda r: r.url.endswith("/offer") and offers.append(json.loads(r.post_data)))
        serve.click("#start")
        serve.wait_for_function("() => window.camfx.lastStats && window.camfx.lastStats.framesDecoded > 20",
                                timeout=60_000)
        serve.wait_for_function("() => document.getElementById('stats-summary').textContent.includes('fps')",
                                timeout=WAIT_MS)
        assert_picture_is_the_hero(serve, width, height)
        shoot(serve, f"serve-page-{width}x{height}")
        # "Publish as" empty: the page names nothing (the server's default holds across restarts)
        # and shows the name the server answered with.
        assert len(offers) == 1 and "name" not in offers[0]
        name = serve.evaluate("() => window.camfx.streamName")
        assert name and serve.inner_text("#view-link") == f"View as {name}"
        assert serve.get_attribute("#publish-name", "placeholder") == name
        serve.evaluate("() => window.camfx.stop()")
        server.wait_sessions(0, timeout=10)

        page = new_page(camera.url + "/", width, height, CAMERA_READY)
        assert [(n, f) for n, f in groups_on(page)] == published
        assert page.locator("#stats-panel").get_attribute("open") is None
        page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0", timeout=WAIT_MS)
        page.wait_for_function("() => window.camfxCamera.lastStats && window.camfxCamera.lastStats.fps_out > 0",
                               timeout=WAIT_MS)
        assert_picture_is_the_hero(page, width, height)
        shoot(page, f"camera-page-{width}x{height}")
        assert serve.problems == [] and page.problems == []


def test_only_the_controls_that_apply_are_shown(new_page, server, camera):
    meta = server.get("/params/schema")["x-camfx-ui"]
    for url, ready in ((server.url + "/", "window.camfx && window.camfx.ready"), (camera.url + "/", CAMERA_READY)):
        page = new_page(url, ready=ready)
        state = "camfx" if "camfx &&" in ready else "camfxCamera"
        for effect in ("none", "blur", "replace", "remove", "toon", "diffusion"):
            page.click(f'#f-effect .seg[data-value="{effect}"]')
            params = page.evaluate(f"() => window.{state}.params")
            shown = set(page.eval_on_selector_all(
                "#controls .field", "fs => fs.filter(f => !f.hidden && !f.closest('details').hidden)"
                ".map(f => f.dataset.field)"))
            expected = {f for f in params if applies(meta["when"].get(f), params)}
            assert shown == expected, (url, effect)
            assert ("blur_strength" in shown) == (effect == "blur")
            assert ("toon_edges" in shown) == (effect == "toon")
            assert ("prompt" in shown) == (effect == "diffusion")
            assert ("model" in shown) == (effect in ("blur", "replace", "remove", "diffusion"))
        # A group with nothing that applies is not shown at all.
        page.click('#f-effect .seg[data-value="none"]')
        assert page.locator('details[data-group="Mask"]').is_hidden()
        assert page.locator('details[data-group="Background"]').is_hidden()


def test_a_server_without_diffusion_offers_none_of_its_controls(new_page):
    running = ServerThread(ServerConfig(diffusion_models={})).start()
    try:
        meta = running.get("/params/schema")["x-camfx-ui"]
        assert "diffusion" in meta["unavailable"]
        page = new_page(running.url + "/")
        button = page.locator('#f-effect .seg[data-value="diffusion"]')
        assert button.is_disabled() and "no diffusion model" in button.get_attribute("title")
        assert "Diffusion is off here" in page.locator('.unavailable[data-effect="diffusion"]').inner_text()
        assert page.locator('details[data-group="Diffusion"]').is_hidden()
    finally:
        running.stop()


def test_sliders_show_their_values(new_page, server, camera):
    for url, ready in ((server.url + "/", "window.camfx && window.camfx.ready"), (camera.url + "/", CAMERA_READY)):
        page = new_page(url, ready=ready)
        page.click('#f-effect .seg[data-value="blur"]')
        output = page.locator('[data-field="blur_strength"] output')
        assert output.inner_text().endswith(" px")
        page.eval_on_selector("#f-blur_strength", "el => { el.value = 21.5; el.dispatchEvent(new Event('input')); }")
        assert output.inner_text() == "21.5 px"
        page.click('details[data-group="Mask"] > summary')
        page.eval_on_selector("#f-mask_feather", "el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
        assert page.locator('[data-field="mask_feather"] output').inner_text() == "off"
    # On the camera page the slider's value reaches the running engine.
    page.wait_for_function("() => window.camfxCamera.params.blur_strength === 21.5", timeout=WAIT_MS)
    page.wait_for_function("() => document.getElementById('sync').dataset.state === 'live'", timeout=WAIT_MS)
    assert camera.get("/params")["blur_strength"] == 21.5


def test_the_background_picker_shows_thumbnails_and_uploads(new_page, server, camera, tmp_path):
    import cv2
    import numpy as np

    image = np.zeros((90, 160, 3), np.uint8)
    image[:, :80] = (40, 160, 240)
    png = tmp_path / "mine.png"
    cv2.imwrite(str(png), image)
    for url, ready, state, backgrounds in (
        (server.url + "/", "window.camfx && window.camfx.ready", "camfx", server.get),
        (camera.url + "/", CAMERA_READY, "camfxCamera", camera.get),
    ):
        page = new_page(url, ready=ready)
        page.click('#f-effect .seg[data-value="replace"]')
        page.click('#f-background .seg[data-value="image"]')
        bundled = backgrounds("/backgrounds")["bundled"]
        for name in bundled:  # a thumbnail each, loaded
            page.wait_for_function(
                f"() => (i => i && i.complete && i.naturalWidth > 0)"
                f"(document.querySelector('.bg-tile[data-value=\"{name}\"] img'))", timeout=WAIT_MS)
        page.set_input_files("#upload", str(png))
        page.wait_for_function(f"() => (window.{state}.params.background_image || '').startsWith('u-')",
                               timeout=WAIT_MS)
        uploaded = page.evaluate(f"() => window.{state}.params.background_image")
        assert uploaded in backgrounds("/backgrounds")["uploaded"]
        tile = page.locator(f'.bg-tile[data-value="{uploaded}"]')
        assert tile.get_attribute("aria-checked") == "true"
        assert tile.locator("img").evaluate("i => i.naturalWidth") > 0
        assert page.locator("#upload-error").is_hidden()
        assert page.locator("#upload").get_attribute("accept") == "image/*,video/*"
    page.wait_for_function("() => document.getElementById('sync').dataset.state === 'live'", timeout=WAIT_MS)
    assert camera.get("/params")["background_image"] == uploaded


def test_presets_save_and_load_in_the_browser_and_on_the_server(new_page, server):
    page = new_page(server.url + "/")
    page.click('#f-effect .seg[data-value="toon"]')
    page.eval_on_selector("#f-toon_edges", "el => { el.value = 0.9; el.dispatchEvent(new Event('change')); }")
    page.fill("#preset-name", "my look")
    page.click("#preset-save")
    page.wait_for_function("() => document.getElementById('preset-note').textContent.includes('--preset')",
                           timeout=WAIT_MS)
    saved = server.get("/presets")["presets"]["my look"]  # the user's presets file: `--preset "my look"`
    assert (saved["effect"], saved["toon_edges"]) == ("toon", 0.9) and "probe" not in saved
    local = page.evaluate("() => JSON.parse(localStorage.getItem('camfx-presets'))")
    assert local["my look"]["effect"] == "toon"

    # Saved by the API, loaded on the page (a new page lists both).
    request = urllib.request.Request(server.url + "/presets/from-api", method="PUT",
                                     data=json.dumps({"effect": "replace", "background": "color",
                                                      "background_color": "#AA0000"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    page.reload()
    page.wait_for_function("() => window.camfx && window.camfx.ready", timeout=WAIT_MS)
    options = page.eval_on_selector_all("#preset-select option", "os => os.map(o => o.value)")
    assert {"my look", "from-api"} <= set(options)

    page.click("#start")
    page.wait_for_function("() => window.camfx.sessionId && window.camfx.status === 'live'", timeout=WAIT_MS)
    session = page.evaluate("() => window.camfx.sessionId")
    page.select_option("#preset-select", "from-api")
    page.wait_for_function("() => window.camfx.serverParams && window.camfx.serverParams.effect === 'replace'",
                           timeout=WAIT_MS)
    params = server.get(f"/sessions/{session}")["params"]
    assert (params["effect"], params["background"], params["background_color"]) == ("replace", "color", "#aa0000")
    assert page.locator('#f-effect .seg[data-value="replace"]').get_attribute("aria-pressed") == "true"
    page.select_option("#preset-select", "my look")
    page.wait_for_function("() => window.camfx.serverParams.effect === 'toon'", timeout=WAIT_MS)
    assert page.locator('[data-field="toon_edges"] output').inner_text() == "0.90"

    page.select_option("#preset-select", "my look")
    page.click("#preset-delete")
    page.wait_for_function("() => ![...document.querySelectorAll('#preset-select option')]"
                           ".some(o => o.value === 'my look')", timeout=WAIT_MS)
    assert "my look" not in server.get("/presets")["presets"]
    page.evaluate("() => window.camfx.stop()")
    server.wait_sessions(0, timeout=10)
    assert page.problems == []


def test_the_view_page_says_what_it_is_doing(new_page, browser):
    port = free_port()
    first = ServerThread(ServerConfig(), port=port).start()
    running = [first]
    try:
        viewer = new_page(f"{first.url}/view/main", ready="window.camfxViewer")
        viewer.wait_for_function("() => window.camfxViewer.state === 'waiting'", timeout=WAIT_MS)
        assert viewer.inner_text("#status") == "Waiting for the stream “main” to start…"
        assert viewer.locator("#video").evaluate("v => getComputedStyle(v).visibility") == "hidden"
        shoot(viewer, "view-waiting")

        publisher = new_page(first.url + "/")
        publisher.fill("#publish-name", "main")
        publisher.click("#start")
        viewer.wait_for_function("() => window.camfxViewer.state === 'connected' && window.camfxViewer.frames > 20",
                                 timeout=60_000)
        assert viewer.locator("#status").is_hidden()
        assert viewer.locator("#video").evaluate("v => getComputedStyle(v).visibility") == "visible"

        running.remove(first)
        first.stop()  # the server is gone: no frozen last frame, and it says so
        viewer.wait_for_function("() => window.camfxViewer.state === 'gone'", timeout=60_000)
        assert viewer.inner_text("#status").startswith("The server is not answering. Trying again in")
        assert viewer.locator("#video").evaluate("v => getComputedStyle(v).visibility") == "hidden"
        shoot(viewer, "view-server-gone")
        publisher.evaluate("() => window.camfx.stop()")
    finally:
        for server in running:
            server.stop()
