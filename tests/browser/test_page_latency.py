"""The demo page measures its own glass-to-glass latency (a frame id stamped into the picture it
sends, read back from the processed stream), and its stats panel explains itself, shows drops
and misses per second and clears on Stop. Headless Chromium with a fake camera against a real
camfx server; the page's latency figure is checked against camfx's own benchmark client's.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from camfx.bench.clip import person_clip
from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.pipeline.budget import LADDER
from camfx.engine.transport.ice import serve_media_on


pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

WAIT_MS = 30_000  # a 2-core machine runs browser, encoder, decoder and engine at once
FPS = 30.0
FRAME_MS = 1000 / FPS


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.problems = problems
    page.goto(server.url + "/")
    page.wait_for_function("() => window.camfx && window.camfx.ready === true", timeout=WAIT_MS)
    page.click("#stats-toggle")  # these tests read the details, folded by default
    yield page
    try:
        page.evaluate("() => window.camfx.pc ? window.camfx.stop() : null")
    finally:
        context.close()
    server.wait_sessions(0, timeout=10)


def wait_for(page, condition: str, arg=None, timeout: int = WAIT_MS):
    """Poll a JS expression over `s` (window.camfx), `L` (window.camfxLatency) and `arg`."""
    page.wait_for_function(f"(arg) => {{ const s = window.camfx, L = window.camfxLatency; return {condition}; }}",
                           arg=arg, timeout=timeout)


def start_live(page, effect: str = "blur") -> str:
    page.click(f'#f-effect .seg[data-value="{effect}"]')
    page.click("#start")
    wait_for(page, "s.sessionId && s.status === 'live'")
    return page.evaluate("() => window.camfx.sessionId")


def sends_camera(page) -> bool:
    return page.evaluate("() => window.camfx.sender.track === window.camfx.stream.getVideoTracks()[0]")


def bench_latencies_ms(url: str, seconds: float = 5.0) -> np.ndarray:
    """camfx's benchmark client against `url`: its latencies (ms), one per fresh frame."""
    async def measure():
        serve_media_on(["127.0.0.1"])
        peer = ClientPeer(SyntheticCamera(person_clip(640, 480, 60), fps=FPS))
        try:
            await peer.connect(url, {"effect": "blur", "probe": True})
            await peer.wait_frames(30)
            await asyncio.sleep(seconds)
            return np.array(peer.received.latencies) * 1000
        finally:
            await peer.close()

    # Its own event loop on its own thread: Playwright's sync API owns this one's.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, measure()).result(timeout=90)


# ---- tests ------------------------------------------------------------------------------------
def test_the_pages_latency_is_plausible_against_the_bench_clients(page, server):
    assert page.evaluate("() => window.camfxLatency") == {"p50": None, "p95": None, "n": 0}
    page.check("#measure-latency")
    session = start_live(page, "blur")
    assert server.get(f"/sessions/{session}")["params"]["probe"] is True  # the offer carried it
    assert not sends_camera(page)  # the stamped canvas goes out
    wait_for(page, "L.n >= 60", timeout=60_000)
    figures = page.evaluate("() => window.camfxLatency")
    engine_p50 = page.evaluate("() => window.camfx.lastServerStats && window.camfx.lastServerStats.engine_latency_ms_p50")
    assert re.fullmatch(r"p50 \d+(\.\d)? ms · p95 \d+(\.\d)? ms", page.inner_text("#g2g"))
    page.click("#stop")
    server.wait_sessions(0, timeout=10)

    # The same server, now alone with camfx's benchmark client.
    bench = bench_latencies_ms(server.url)
    assert bench.size >= 30
    bench_p50, bench_p95 = np.percentile(bench, [50, 95])
    print(f"page p50 {figures['p50']:.1f} p95 {figures['p95']:.1f} ms (n {figures['n']}); "
          f"bench p50 {bench_p50:.1f} p95 {bench_p95:.1f} ms; engine p50 {engine_p50} ms")

    # Seen on a 2-core machine: page p50 ~31 ms, p95 47-64; bench p50 13-17, p95 16-22; the
    # engine's own p50 ~4. The page's path has more in it than the bench's (canvas capture,
    # Chromium's jitter buffer, waiting for display), so it reads higher, never lower by much.
    # Bounds: at least half the bench's p50 and above the engine's own share (seconds for
    # milliseconds, or a clock that is not performance.now(), fail here), and at most the
    # bench's p95 plus four frame intervals (an id misread as a much older one, microseconds,
    # or another clock fail there). Wide, as a busy machine may slow either run on its own.
    page_p50 = figures["p50"]
    assert page_p50 > 0 and figures["p95"] >= page_p50
    assert page_p50 >= 0.5 * bench_p50, (figures, bench_p50)
    if engine_p50 is not None:
        assert page_p50 > engine_p50, (figures, engine_p50)
    assert page_p50 <= bench_p95 + 4 * FRAME_MS, (figures, bench_p95)
    assert page.problems == []


def test_the_switch_stamps_mid_session_and_off_sends_the_camera_again(page, server):
    session = start_live(page, "blur")
    assert sends_camera(page)
    assert server.get(f"/sessions/{session}")["params"]["probe"] is False

    page.check("#measure-latency")  # mid-session: replaceTrack to the stamped canvas, probe on
    wait_for(page, "s.serverParams && s.serverParams.probe === true")
    assert not sends_camera(page)
    wait_for(page, "L.n >= 20", timeout=60_000)

    page.uncheck("#measure-latency")
    wait_for(page, "s.serverParams && s.serverParams.probe === false")
    assert sends_camera(page)
    assert server.get(f"/sessions/{session}")["params"]["probe"] is False
    # A second of video later nothing has been measured: no stamps, no samples.
    t0 = page.evaluate("() => document.getElementById('remote').currentTime")
    wait_for(page, "document.getElementById('remote').currentTime > arg + 1", arg=t0)
    assert page.evaluate("() => window.camfxLatency") == {"p50": None, "p95": None, "n": 0}
    assert page.inner_text("#g2g") == "off"
    assert page.problems == []


def test_the_stats_panel_explains_itself_shows_rates_and_clears_on_stop(page, server):
    # Every quality level the engine can report has an explanation, shown on the Quality tile.
    tips = page.evaluate("() => window.camfx.qualityTips")
    quality_title = page.get_attribute("#sv-quality-tile", "title")
    for level in LADDER:
        assert len(tips.get(level.name, "")) > 20, level.name
        assert f"{level.name}: {tips[level.name]}" in quality_title
    # ...and every other figure has its tooltip.
    titles = page.eval_on_selector_all(".stats .tiles > div", "tiles => tiles.map(t => t.title)")
    assert len(titles) == 12 and all(len(t) > 20 for t in titles), titles
    labels = page.eval_on_selector_all("#server-stats dt", "dts => dts.map(d => d.textContent)")
    assert "Dropped /s" in labels and "Misses /s" in labels

    start_live(page, "blur")
    wait_for(page, "s.serverRates && s.serverRates.dropped !== null && s.serverRates.misses !== null")
    rate = re.compile(r"\d+(\.\d)?/s")
    assert rate.fullmatch(page.inner_text("#sv-dropped")), page.inner_text("#sv-dropped")
    assert rate.fullmatch(page.inner_text("#sv-misses")), page.inner_text("#sv-misses")
    wait_for(page, "document.querySelectorAll('#sv-stages .stage-row').length >= 3 && s.lastStats")
    level = page.inner_text("#sv-quality")
    assert page.get_attribute("#sv-quality", "title") == tips[level]

    page.click("#stop")
    wait_for(page, "s.status === 'idle'")
    values = page.eval_on_selector_all(".stats dd", "dds => dds.map(d => d.textContent)")
    assert values and set(values) == {"–"}, values
    assert page.locator("#sv-stages .stage-row").count() == 0
    assert page.inner_text("#sv-runtime") == "" and page.inner_text("#codec-in-use") == ""
    assert page.problems == []


@pytest.mark.parametrize("width", [320, 1600])
def test_the_effect_selector_fits_its_panel(page, width):
    page.set_viewport_size({"width": width, "height": 900})
    selector = page.locator("#f-effect").bounding_box()
    panel = page.locator(".controls").bounding_box()
    assert panel["x"] <= selector["x"] and selector["x"] + selector["width"] <= panel["x"] + panel["width"]
    assert panel["y"] <= selector["y"] and selector["y"] + selector["height"] <= panel["y"] + panel["height"]
    # No button's word is cut off, and nothing widens the page past the screen.
    clipped = page.eval_on_selector_all("#f-effect .seg", "bs => bs.filter(b => b.scrollWidth > b.clientWidth).length")
    assert clipped == 0
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
