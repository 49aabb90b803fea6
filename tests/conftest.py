"""Shared fixtures: a real camfx server on a loopback port, real photographs, clips."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads this once
# Servers started by tests keep their presets here, never in the user's config folder.
os.environ.setdefault("CAMFX_PRESETS", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"camfx-test-presets-{os.getpid()}", "presets.json"))

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from camfx.bench.latency import free_port
from camfx.engine.config import ServerConfig
from camfx.engine.params import Params
from camfx.engine.media import yuv
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.transport import http_server
from camfx.engine.transport.http import HUB, SESSIONS, create_app, http_limits
from camfx.engine.transport.ice import serve_media_on


# Every peer connection in the tests, servers' and clients' alike, binds and offers 127.0.0.1
# only: no packet leaves loopback.
serve_media_on(["127.0.0.1"])


class RunningServer:
    def __init__(self, app: web.Application, url: str):
        self.app, self.url = app, url

    @property
    def hub(self):
        return self.app[HUB]

    @property
    def sessions(self):
        return self.app[SESSIONS]


async def start_server(config: ServerConfig | None = None, pipeline_factory=None, port: int | None = None,
                       ssl_context=None):
    """camfx's app on a loopback port (free, unless given), served on this event loop as `camfx
    serve` serves it. (serve.ServerThread serves it from a thread of its own.)"""
    config = config or ServerConfig()
    config.port = port or free_port()
    app = create_app(config, pipeline_factory)
    runner = await http_server.start(app, "127.0.0.1", config.port, limits=http_limits(config),
                                     ssl_context=ssl_context)
    return runner, RunningServer(app, f"{'https' if ssl_context else 'http'}://127.0.0.1:{config.port}")


@pytest.fixture(scope="module")
def segmenter():
    """The default selfie model, as the server loads it (a reference for what came back)."""
    return Segmenters().get(Params().model)


@pytest_asyncio.fixture
async def server():
    runner, running = await start_server()
    yield running
    await runner.cleanup()


@pytest.fixture(scope="session")
def portrait_rgb() -> np.ndarray:
    """A real photograph of a person (matplotlib's Grace Hopper sample), 480x640 RGB."""
    import cv2
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def portrait(portrait_rgb) -> np.ndarray:
    return yuv.from_rgb(portrait_rgb)


@pytest.fixture(scope="session")
def clip_640():
    from camfx.bench.clip import person_clip

    return person_clip(640, 480, 30)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory):
    """(model folder, TAESD folder) of tiny random diffusion models, saved like hub repos."""
    from .tiny_diffusion import build_tiny_repo

    return build_tiny_repo(tmp_path_factory.mktemp("diffusion"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def coturn(tmp_path_factory):
    """Debian's coturn on a loopback UDP port (STUN and TURN, user camfx / turnpass): (port, log)."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn's turnserver is missing: apt-get install coturn (.ci/run does)")
    port = free_udp_port()
    log = tmp_path_factory.mktemp("coturn") / "turn.log"
    proc = subprocess.Popen([
        binary, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--min-port=49200", "--max-port=49400", "--lt-cred-mech", "--user=camfx:turnpass", "--realm=camfx.test",
        "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--fingerprint", f"--log-file={log}",
        "--simple-log", "--no-stun-backward-compatibility",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    assert proc.poll() is None, log.read_text() if log.exists() else "turnserver exited"
    yield port, log
    proc.terminate()
    proc.wait(10)


KINDS = ("unit", "webrtc", "browser", "cluster")  # the groups (pyproject's markers); one per file


def pytest_collection_modifyitems(config, items):
    unmarked = sorted({item.path.name for item in items if not any(item.get_closest_marker(k) for k in KINDS)})
    if unmarked:
        raise pytest.UsageError(f"mark each test file with one of {', '.join(KINDS)} "
                                f"(a module-level pytestmark): {', '.join(unmarked)}")
