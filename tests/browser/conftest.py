"""What the page tests share: a camfx server on a thread, a camera clip, and Chromium with that
clip as its camera (module-scoped: one of each per test file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from camfx.bench.clip import person_clip, write_y4m
from camfx.engine.config import ServerConfig

from ..chromium import browser_with_camera
from ..server_thread import ServerThread


@pytest.fixture(scope="module")
def server():
    # A short connect timeout: a session the browser never connects must not hold a slot long.
    running = ServerThread(ServerConfig(max_sessions=2, connect_timeout=15.0)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("camera") / "person.y4m", person_clip(640, 480, 30))


@pytest.fixture(scope="module")
def browser(camera_file):
    with browser_with_camera(camera_file) as browser:
        yield browser
