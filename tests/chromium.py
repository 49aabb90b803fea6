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
