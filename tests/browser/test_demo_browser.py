"""The demo page in a real browser: headless Chromium with a fake camera (a .y4m clip of a
person) talks WebRTC to a real camfx server, shows the processed stream and live stats, drives
the effect parameters over the data channel, and closes its session on Stop.

Needs Playwright's Python package and a Chromium binary (Debian's /usr/bin/chromium, or the
path in $CAMFX_CHROMIUM). Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

WAIT_MS = 30_000  # a 2-core machine runs browser, encoder, decoder and engine at once
ARTIFACTS = Path(os.environ.get("CAMFX_ARTIFACTS", Path(__file__).resolve().parent.parent.parent / "test-artifacts"))


from camfx.engine.config import ServerConfig  # noqa: E402

from ..server_thread import ServerThread  # noqa: E402


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
    page.problems = problems
    yield page
    try:
        # Whatever a test left running, the server must end up with no sessions.
        page.evaluate("() => window.camfx && window.camfx.pc ? window.camfx.stop() : null")
    finally:
        context.close()
    server.wait_sessions(0, timeout=10)


def open_demo(page, server) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("() => window.camfx && window.camfx.ready === true", timeout=WAIT_MS)


def camfx(page, expression: str):
    return page.evaluate(f"() => {{ const s = window.camfx; return {expression}; }}")


def wait_for(page, condition: str, arg=None, timeout: int = WAIT_MS):
    """Poll a JS expression over `s` (window.camfx) and `arg` until it is truthy."""
    page.wait_for_function(f"(arg) => {{ const s = window.camfx; return {condition}; }}", arg=arg, timeout=timeout)


# ---- tests ------------------------------------------------------------------------------------
def test_stream_stats_live_params_and_stop(page, server):
    open_demo(page, server)
    # The controls come from /params/schema: every field has one.
    schema = server.get("/params/schema")
    for field in schema["properties"]:
        assert page.locator(f'[data-field="{field}"]').count() == 1, f"no control for {field}"
    assert page.locator(".bg-tile").count() >= len(server.get("/backgrounds")["bundled"])
    # The simple view: the details (connection, engine, stages) are one click away.
    assert page.locator("#stats-panel").get_attribute("open") is None
    assert page.locator("#st-decoded").is_hidden()

    page.click("#start")
    wait_for(page, "s.sessionId && s.status === 'live'")
    session_id = camfx(page, "s.sessionId")
    assert server.session_count() == 1

    # The processed video plays decoded frames.
    wait_for(page, "(v => v.videoWidth > 0 && v.currentTime > 0)(document.getElementById('remote'))")
    t0 = page.evaluate("() => document.getElementById('remote').currentTime")
    wait_for(page, "document.getElementById('remote').currentTime > arg + 0.5", arg=t0)
    wait_for(page, "s.lastStats && s.lastStats.framesDecoded > 0")
    decoded = camfx(page, "s.lastStats.framesDecoded")
    wait_for(page, "s.lastStats.framesDecoded > arg + 10", arg=decoded)
    # The client-side stats are all there: fps both ways, round trip, jitter buffer.
    wait_for(
        page,
        "s.lastStats.fpsSent > 0 && s.lastStats.fpsReceived > 0 && s.lastStats.rttMs !== null"
        " && s.lastStats.jitterBufferMs > 0",
    )
    assert page.locator("#stats-summary").inner_text().endswith(("fps", "ms", "lean", "no-feather", "mask-every-2nd"))
    page.click("#stats-toggle")
    assert page.locator("#st-decoded").is_visible()
    assert page.locator("#st-decoded").inner_text() not in ("", "–")

    # The server's stats messages arrive on the data channel and are shown.
    wait_for(page, "s.lastServerStats && s.lastServerStats.frames_out > 0")
    server_stats = camfx(page, "s.lastServerStats")
    assert server_stats["session_id"] == session_id
    assert {"segment", "effect"} <= set(server_stats["stage_ms"])
    assert server_stats["quality"]
    wait_for(page, "document.querySelectorAll('#sv-stages .stage-row').length >= 3")
    assert page.locator("#sv-quality").inner_text() == server_stats["quality"]

    # Switching the effect changes the session's params on the server.
    page.click('#f-effect .seg[data-value="toon"]')
    wait_for(page, "s.serverParams && s.serverParams.effect === 'toon'")
    assert server.get(f"/sessions/{session_id}")["params"]["effect"] == "toon"
    assert page.locator("#f-toon_edges").is_visible()
    wait_for(page, "s.lastServerStats.effect === 'toon'")

    # A slider drag is sent live (coalesced) and lands on the server.
    page.click('#f-effect .seg[data-value="blur"]')
    page.eval_on_selector(
        "#f-blur_strength",
        "el => { for (const v of [20, 25, 30]) { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); } }",
    )
    wait_for(page, "s.serverParams && s.serverParams.effect === 'blur' && s.serverParams.blur_strength === 30")
    params = server.get(f"/sessions/{session_id}")["params"]
    assert (params["effect"], params["blur_strength"]) == ("blur", 30.0)
    assert page.locator("#f-blur_strength").locator("xpath=..").locator("output").inner_text() == "30.0 px"

    # An invalid value is refused by the server, shown next to its control, and changes nothing.
    page.evaluate("() => window.camfx.send({blur_strength: 999})")
    error = page.locator("#f-blur_strength-error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert "50" in error.inner_text()
    assert server.get(f"/sessions/{session_id}")["params"]["blur_strength"] == 30.0

    # Colours and the background image go the same way.
    page.click('#f-effect .seg[data-value="replace"]')
    page.click('#f-background .seg[data-value="image"]')
    page.click('.bg-tile[data-value="office"]')
    wait_for(page, "s.serverParams.effect === 'replace' && s.serverParams.background_image === 'office'")
    assert server.get(f"/sessions/{session_id}")["params"]["background_image"] == "office"

    # Stop closes the camera, the peer connection and the server's session.
    page.click("#stop")
    wait_for(page, "s.status === 'idle' && s.pc === null && s.stream === null")
    assert page.evaluate("() => document.getElementById('local').srcObject") is None
    server.wait_sessions(0, timeout=5)

    # Start again on the same page: a new session, with the settings chosen before.
    page.click("#start")
    wait_for(page, "s.sessionId && s.sessionId !== arg && s.lastStats && s.lastStats.framesDecoded > 5", arg=session_id)
    params = server.get(f"/sessions/{camfx(page, 's.sessionId')}")["params"]
    assert (params["effect"], params["background_image"], params["blur_strength"]) == ("replace", "office", 30.0)
    page.click("#stop")
    server.wait_sessions(0, timeout=5)
    assert page.problems == []


def test_uploaded_background_is_selected(page, server, tmp_path):
    import cv2
    import numpy as np

    image = np.zeros((90, 160, 3), np.uint8)
    image[:, :80] = (40, 160, 240)
    png = tmp_path / "mine.png"
    cv2.imwrite(str(png), image)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"this is not a picture")

    open_demo(page, server)
    page.click('#f-effect .seg[data-value="replace"]')
    page.set_input_files("#upload", str(not_an_image))
    page.locator("#upload-error").wait_for(state="visible", timeout=WAIT_MS)

    page.set_input_files("#upload", str(png))
    wait_for(page, "s.params.background_image && s.params.background_image.startsWith('u-')")
    uploaded = camfx(page, "s.params.background_image")
    assert uploaded in server.get("/backgrounds")["uploaded"]
    assert page.locator(f'.bg-tile[data-value="{uploaded}"]').get_attribute("aria-checked") == "true"
    assert page.locator("#upload-error").is_hidden()

    # Chosen before Start, it goes out with the offer.
    page.click("#start")
    wait_for(page, "s.sessionId && s.status === 'live'")
    params = server.get(f"/sessions/{camfx(page, 's.sessionId')}")["params"]
    assert (params["effect"], params["background"], params["background_image"]) == ("replace", "image", uploaded)
    page.click("#stop")
    server.wait_sessions(0, timeout=5)


def test_busy_server_is_reported(page, server):
    open_demo(page, server)
    server.config.max_sessions = 0  # the engine reads its config on every offer
    try:
        page.click("#start")
        banner = page.locator("#banner")
        banner.wait_for(state="visible", timeout=WAIT_MS)
        assert "busy" in banner.inner_text() and "session limit" in banner.inner_text()
        wait_for(page, "s.status === 'error' && s.pc === null && s.stream === null")
        assert page.locator("#start").is_enabled()
    finally:
        server.config.max_sessions = 2
    assert server.session_count() == 0


def test_denied_camera_is_reported(page, server):
    page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    open_demo(page, server)
    page.click("#start")
    banner = page.locator("#banner")
    banner.wait_for(state="visible", timeout=WAIT_MS)
    assert "permission was denied" in banner.inner_text()
    assert camfx(page, "s.status") == "error"
    assert page.locator("#start").is_enabled() and page.locator("#stop").is_disabled()
    assert server.session_count() == 0


def test_h264_end_to_end(page, server):
    open_demo(page, server)
    assert page.locator('#codec option[value="video/H264"]').is_enabled(), "this Chromium cannot receive H264"
    page.select_option("#codec", "video/H264")
    page.click("#start")
    wait_for(page, "s.lastStats && s.lastStats.framesDecoded > 5")
    assert camfx(page, "s.lastStats.codecReceived") == "video/H264"
    assert camfx(page, "s.lastStats.codecSent") == "video/H264"
    page.click("#stop")
    server.wait_sessions(0, timeout=5)


def test_diffusion_controls_and_a_model_without_weights(page, server):
    open_demo(page, server)
    page.click('[data-field="effect"] [data-value="diffusion"]')
    # The diffusion controls appear, the mask's too (background mode needs the person mask).
    assert page.locator('[data-field="prompt"] input[type="text"]').is_visible()
    page.click('[data-group="Mask"] > summary')  # folded in the simple view
    assert page.locator('[data-field="model"]').is_visible()
    served = server.get("/healthz")["diffusion_models"]
    options = page.locator('[data-field="diffusion_model"] option').evaluate_all("os => os.map(o => o.value)")
    assert options == served and "stabilityai/sd-turbo" in options
    page.click('[data-field="diffusion_mode"] [data-value="frame"]')
    assert not page.locator('[data-field="model"]').is_visible()  # no mask in frame mode

    # No weights on this machine: the page says so next to the model, and the stream goes on.
    page.click("#start")
    wait_for(page, "s.sessionId && s.status === 'live'")
    wait_for(page, "s.errors.diffusion_model", timeout=60_000)
    assert "--random-weights" in camfx(page, "s.errors.diffusion_model")
    assert page.locator('[data-field="diffusion_model"] .field-error').is_visible()
    wait_for(page, "document.getElementById('sv-diffusion').dataset.status === 'error'")
    assert "diffusion: error" in page.locator("#stats-summary").inner_text()  # the simple view says so
    page.click("#stats-toggle")
    assert page.locator("#sv-diffusion").inner_text().startswith("Diffusion: error")
    t0 = page.evaluate("() => document.getElementById('remote').currentTime")
    wait_for(page, "document.getElementById('remote').currentTime > arg + 0.5", arg=t0)

    # An empty prompt is refused by the server and shown at the prompt.
    page.fill('[data-field="prompt"] input', "   ")
    page.press('[data-field="prompt"] input', "Enter")
    wait_for(page, "s.errors.prompt")
    assert "empty" in camfx(page, "s.errors.prompt")
    assert page.problems == []


def test_the_page_reconnects_by_itself_when_the_server_comes_back(browser):
    """A server restarted (or a cluster replica gone): the page shows it is reconnecting, starts
    a new session by itself once a server answers on the address again, and streams; Stop ends
    the retrying too."""
    from camfx.bench.latency import free_port

    port = free_port()
    first = ServerThread(ServerConfig(), port=port).start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    second, running = None, [first]
    try:
        open_demo(page, first)
        page.click("#start")
        wait_for(page, "s.status === 'live' && s.lastStats && s.lastStats.framesDecoded > 10")
        old_session = camfx(page, "s.sessionId")
        running.remove(first)
        first.stop()  # its sessions close: the page learns the server ended them
        wait_for(page, "s.status === 'waiting' || s.status === 'starting' || s.status === 'connecting'")
        banner = page.locator("#banner").inner_text()
        assert "Trying again" in banner or "Reconnecting" in banner, banner
        # While it waits: the picture says so (not "Press Start" with Start disabled), Stop gives
        # up, and the banner is a sentence a person understands.
        wait_for(page, "s.status === 'waiting' && document.getElementById('banner-text').textContent"
                       ".startsWith('The server is not answering. Trying again in')", timeout=60_000)
        assert page.locator("#picture-text").inner_text() == "Reconnecting…"
        assert page.locator("#picture-empty").is_visible()
        assert page.locator("#start").is_disabled() and page.locator("#stop").is_enabled()
        assert "Failed to fetch" not in page.locator("#banner").inner_text()
        page.screenshot(path=str(ARTIFACTS / "serve-page-reconnecting.png"))
        second = ServerThread(ServerConfig(), port=port).start()
        running.append(second)
        wait_for(page, "s.status === 'live' && s.sessionId && s.lastStats && s.lastStats.framesDecoded > 10",
                 timeout=60_000)
        assert camfx(page, "s.sessionId") != old_session and camfx(page, "s.reconnects") >= 1
        assert second.session_count() == 1
        assert page.locator("#banner").is_hidden()

        running.remove(second)
        second.stop()  # gone again; this time Stop gives up
        wait_for(page, "s.status === 'waiting'", timeout=60_000)
        page.click("#stop")
        wait_for(page, "s.status === 'idle'")
        page.wait_for_timeout(9000)  # longer than the longest back-off: nothing starts again
        assert camfx(page, "s.status") == "idle" and camfx(page, "s.pc") is None
    finally:
        context.close()
        for server in running:
            server.stop()
