"""Debian's Chromium driven by Playwright (never a downloaded browser), with a fake camera that
plays a .y4m clip. Needs /usr/bin/chromium, or the path in $CAMFX_CHROMIUM."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CAMFX_CHROMIUM", "/usr/bin/chromium")

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
    raise RuntimeError(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set CAMFX_CHROMIUM")

# What the machine's closed network needs (no background connections), and a fake camera.
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Real host addresses in ICE candidates, not mDNS names (resolving those would multicast on the LAN).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def launch(playwright, camera_file: Path, *extra: str):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=[*ARGS, f"--use-file-for-fake-video-capture={camera_file}", *extra])


@contextmanager
def browser_with_camera(camera_file: Path, *extra: str):
    """Playwright and one Chromium whose camera plays `camera_file`, both stopped at the end."""
    from playwright import sync_api

    playwright = sync_api.sync_playwright().start()
    try:
        browser = launch(playwright, camera_file, *extra)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


# The npm whip-whep client, a WHIP / WHEP client camfx did not write (the OBS stand-in).
WHIP_WHEP = Path(__file__).parent / "web" / "node_modules" / "whip-whep"
if not (WHIP_WHEP / "whip.js").is_file():
    raise RuntimeError("tests/web/node_modules is missing: run `npm ci --prefix tests/web` (.ci/run does)")

PUBLISH_PAGE = """<!doctype html><meta charset="utf-8"><title>publisher (an OBS stand-in)</title>
<script type="module">
import { WHIPClient } from "/lib/whip.js";
window.publish = async (url, token) => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const pc = new RTCPeerConnection({ iceServers: [] });  // explicit: no STUN, loopback only
  pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
  const client = new WHIPClient();
  await client.publish(pc, url, token);
  window.publisher = { pc, client };
  return String(client.resourceURL);
};
window.unpublish = () => window.publisher.client.stop();
window.ready = true;
</script>"""
