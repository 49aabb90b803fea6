"""README.md's three paths (a video call, OBS, benchmarking), followed as a new user would: the
code blocks marked `<!-- readme-path: NAME -->` are read from the README and their commands run
in order, and what the README says the user sees is checked (screenshots kept under
$CAMFX_ARTIFACTS, default test-artifacts/).

Only what cannot exist here is substituted, and each substitution is named:
- the install line (`python3 -m venv .venv && .venv/bin/pip install ...`) is not run: no package
  index is reachable from the tests, and this interpreter already has camfx installed from this
  tree. It is checked instead: the base install, plus extras that pyproject.toml declares.
  `.venv/bin/camfx` runs as `python -m camfx` with this interpreter (the same command).
- `sudo apt install v4l2loopback...` and `sudo modprobe v4l2loopback ...` are not run (no kernel
  modules on these machines); they are checked to be the lines `camfx doctor` prints.
- video call: the webcam /dev/video0 is a looped .y4m clip of a real photograph, and the virtual
  camera is a .y4m file (`--input clip.y4m --loop --output out.y4m`); Ctrl-C is SIGINT; the
  control port 8081 is a free port.
- OBS: port 8080 is a free port (the README's URLs rewritten to it); OBS's WHIP output is the npm
  `whip-whep` client (tests/web) in Chromium, publishing the fake camera to the README's WHIP
  URL with the README's token; the Browser Source is Chromium opening the README's /view URL at
  the README's size; its `curl` that changes the effect live runs as written, on that port.
- benchmarking: short runs (`--seconds 1 --warmup 0.5` for latency, `--frames 8` for quality)
  writing to a temporary folder instead of bench/results.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

from camfx.bench.clip import person_clip, write_y4m  # noqa: E402
from camfx.bench.latency import free_port  # noqa: E402
from camfx.engine import setup_checks  # noqa: E402
from camfx.engine.media import yuv  # noqa: E402

from ..chromium import PUBLISH_PAGE, WHIP_WHEP, browser_with_camera  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARTIFACTS = Path(os.environ.get("CAMFX_ARTIFACTS", ROOT / "test-artifacts"))
CAMFX = [sys.executable, "-m", "camfx"]
WAIT_MS = 30_000
# ---- reading the README ---------------------------------------------------------------------
def path_block(name: str) -> str:
    """The fenced block right after `<!-- readme-path: NAME -->`."""
    match = re.search(rf"<!-- readme-path: {re.escape(name)} -->\s*```\w*\n(.*?)```", README, re.S)
    assert match, f"README.md has no block marked <!-- readme-path: {name} -->"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """Each shell command of a block, split as the shell would (comments dropped, `&&` splits)."""
    out: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1:]
    return out


def said(text: str) -> bool:
    """Whether the README quotes `text` (its line breaks undone)."""
    return text in " ".join(README.split())


def check_install(cmds: list[list[str]], extras: set[str]) -> list[list[str]]:
    """The venv and install commands: what a fresh clone needs, with extras pyproject declares.
    Returns the commands left to run."""
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert cmds[0] == ["python3", "-m", "venv", ".venv"], cmds[0]
    assert cmds[1][:2] == [".venv/bin/pip", "install"] and len(cmds[1]) == 3, cmds[1]
    target = cmds[1][2]
    named = set(re.fullmatch(r"\.(?:\[([\w,]+)\])?", target).group(1).split(",")) if "[" in target else set()
    assert named == extras and named <= declared, (target, declared)
    return cmds[2:]


def camfx_args(cmd: list[str]) -> list[str]:
    assert cmd[0] == ".venv/bin/camfx", cmd
    return cmd[1:]


def run_camfx(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*CAMFX, *args], cwd=kwargs.pop("cwd", None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_line(stream, pattern: str, timeout: float = 60.0) -> tuple[str, list[str]]:
    """Read `stream` until a line matches `pattern`; the line and everything read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return line.strip(), seen
    raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(seen))


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def read_y4m(path: Path) -> list[np.ndarray]:
    """The luma planes of a .y4m file."""
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    w = int(re.search(rb" W(\d+)", header).group(1))
    h = int(re.search(rb" H(\d+)", header).group(1))
    size = w * h * 3 // 2
    frames, pos = [], 0
    while body.startswith(b"FRAME", pos):
        start = body.index(b"\n", pos) + 1
        frames.append(np.frombuffer(body[start:start + w * h], np.uint8).reshape(h, w))
        pos = start + size
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames = person_clip(640, 480, 30)
    return write_y4m(tmp_path_factory.mktemp("camera") / "clip.y4m", frames), frames


@pytest.fixture(scope="module")
def browser(clip):
    with browser_with_camera(clip[0]) as browser:
        yield browser


# ---- 1. a video call ------------------------------------------------------------------------
def test_the_video_call_path(clip, browser, tmp_path):
    cmds = check_install(commands(path_block("video-call")), {"camera"})
    apt, modprobe, camera = cmds
    assert " ".join(apt) == setup_checks.INSTALL["debian"], apt
    assert " ".join(modprobe) == setup_checks.MODPROBE
    args = camfx_args(camera)
    assert args[0] == "camera" and "--input" not in args and "--output" not in args

    # What the README says the terminal shows, the camera and the virtual camera substituted.
    port, out = free_port(), tmp_path / "out.y4m"
    quoted = "camfx camera: camera /dev/video0 -> virtual camera; controls at http://127.0.0.1:8081/"
    assert said(quoted), "the README no longer quotes camfx camera's first line"
    process = run_camfx([*args, "--input", str(clip[0]), "--loop", "--output", str(out),
                         "--control", f"127.0.0.1:{port}"], cwd=tmp_path)
    try:
        line, _ = wait_for_line(process.stderr, "controls at")
        assert line == (quoted.replace("camera /dev/video0", f"file {clip[0]} (looped)")
                        .replace("virtual camera", str(out)).replace("8081", str(port)))

        # The control page the README sends the user to: the output's preview, live.
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("() => window.camfxCamera && window.camfxCamera.ready", timeout=WAIT_MS)
        page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0", timeout=WAIT_MS)
        page.wait_for_function("() => window.camfxCamera.lastStats && window.camfxCamera.lastStats.fps_out > 0",
                               timeout=WAIT_MS)
        shoot(page, "readme-video-call-control-page")
        assert problems == []
        page.context.close()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    summary = re.search(r"camfx camera: (\d+) frames in, (\d+) out, (\d+) dropped; .* latency p50 [\d.]+ ms", stderr)
    wrote = re.search(rf"camfx camera: wrote (\d+) frames to {re.escape(str(out))} \((\d+) dropped\)", stderr)
    assert summary and wrote, stderr
    assert int(wrote.group(1)) > 0 and int(summary.group(2)) > 0

    # A processed frame: the person kept, the background blurred (the shelves' texture gone).
    inputs = [yuv.planes(f)[0] for f in clip[1]]
    written = read_y4m(out)
    assert len(written) == int(wrote.group(1))
    frame = written[len(written) // 2].astype(int)
    source = min(inputs, key=lambda f: np.abs(f.astype(int) - frame).mean()).astype(int)
    kept = (np.abs(frame - source) < 8).mean()
    assert 0.15 < kept < 0.9, kept  # the person as the camera saw them, and not the whole frame
    shelves = (slice(30, 70), slice(0, 200))  # books on the shelf, above the person's head

    def texture(y):
        return np.abs(cv2.Laplacian(y[shelves].astype(np.float32), cv2.CV_32F)).mean()

    assert texture(frame) < 0.5 * texture(source), (texture(frame), texture(source))
    cv2.imwrite(str(ARTIFACTS / "readme-video-call-output-frame.png"), written[len(written) // 2])


# ---- 2. OBS ---------------------------------------------------------------------------------
@pytest.fixture
def pages(tmp_path):
    """Another origin on loopback: the OBS stand-in's page and the whip-whep library."""
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "publish.html").write_text(PUBLISH_PAGE)
    (folder / "lib").symlink_to(WHIP_WHEP)
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="readme-pages", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def log_message(self, *args) -> None:
        pass


def test_the_obs_path(browser, pages, tmp_path):
    cmds = check_install(commands(path_block("obs")), set())
    (serve,) = cmds
    args = camfx_args(serve)
    assert args[:1] == ["serve"] and "--port" not in args
    token = args[args.index("--token") + 1]

    settings = path_block("obs-settings")
    whip = re.search(r"Server\s+(http://\S+)", settings).group(1)
    assert re.search(rf"Bearer Token\s+{re.escape(token)}\b", settings), "the token in OBS is not the server's"
    source = re.search(r"Browser:\s+URL\s+(http://\S+)", settings).group(1)
    width, height = map(int, re.search(r"Width (\d+), Height (\d+)", settings).groups())
    assert whip.endswith("/whip/main") and "/view/main?" in source and "transparent=1" in source
    assert f"token={token}" in source

    port = free_port()
    process = run_camfx([*args, "--port", str(port)], cwd=tmp_path)
    try:
        wait_for_line(process.stdout, rf"open http://127\.0\.0\.1:{port}/ in a browser")
        whip, source = (url.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for url in (whip, source))

        # OBS's Start Streaming: a WHIP client camfx did not write, from another origin.
        obs = browser.new_context().new_page()
        obs.goto(f"{pages}/publish.html")
        obs.wait_for_function("() => window.ready === true", timeout=WAIT_MS)
        obs.evaluate("([url, token]) => window.publish(url, token)", [whip, token])

        def stream():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/streams/main",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 30
        while not stream()["fps_in"] > 10:
            assert time.monotonic() < deadline, "the WHIP stream does not reach camfx"
            time.sleep(0.3)
        assert stream()["effect"] == "remove"

        # The Browser Source: the README's URL at the README's size, over a magenta scene.
        view = browser.new_context(viewport={"width": width, "height": height}).new_page()
        problems: list[str] = []
        view.on("pageerror", lambda exc: problems.append(str(exc)))
        view.goto(source)
        view.wait_for_function("() => window.camfxViewer && window.camfxViewer.state === 'connected' "
                               "&& window.camfxViewer.frames > 60", timeout=WAIT_MS)
        view.evaluate("() => { document.documentElement.style.background = '#ff00ff'; }")
        view.wait_for_timeout(300)
        path = shoot(view, "readme-obs-browser-source")
        shot = cv2.imread(str(path))[..., ::-1].astype(int)
        magenta = (shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] > 200)
        green = (shot[..., 1] - shot[..., 0] > 80) & (shot[..., 1] - shot[..., 2] > 80)
        assert magenta[int(height * 0.02):int(height * 0.1)].mean() > 0.9  # above the head: see-through
        assert 0.3 < magenta.mean() < 0.95, magenta.mean()  # the person is not
        assert (~magenta[int(height * 0.85):int(height * 0.98)]).mean() > 0.1  # the suit
        assert green.mean() < 0.01  # no key colour left: no chroma-key filter needed
        assert problems == [] and stream()["viewers"] == 1
        # The README's live change, by the stream's name.
        curl = re.search(r"`(curl [^`]+)`", " ".join(README.split())).group(1).replace("8080", str(port))
        changed = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
        assert changed.returncode == 0 and json.loads(changed.stdout)["effect"] == "blur", changed.stdout
        assert stream()["effect"] == "blur"
        obs.evaluate("() => window.unpublish()")
        view.wait_for_function("() => window.camfxViewer.state !== 'connected'", timeout=WAIT_MS)
        view.context.close()
        obs.context.close()
    finally:
        stop(process)
    assert "Traceback" not in process.stderr.read()


# ---- 3. benchmarking ------------------------------------------------------------------------
def test_the_benchmark_path(tmp_path):
    latency, quality = check_install(commands(path_block("bench")), {"bench"})
    latency, quality = camfx_args(latency), camfx_args(quality)
    assert latency[:2] == ["bench", "latency"] and quality[:2] == ["bench", "quality"]

    run = subprocess.run([*CAMFX, *latency, "--seconds", "1", "--warmup", "0.5", "--out", str(tmp_path / "lat")],
                         capture_output=True, text=True, timeout=200, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    # The table the README describes: one row per configuration, fps and p50 / p95 / p99, each
    # row's p50 against echo and echo-marker, and the server's CPU.
    for row in ("echo", "echo-marker", "none", "blur", "replace", "whip-whep blur"):
        assert re.search(rf"640x480\s+VP8\s+{row}:\s+[\d.]+ fps .* p50 +[\d.]+ +p95 +[\d.]+ +p99 +[\d.]+ ms",
                         run.stdout), (row, run.stdout)
    assert re.search(r"blur:.*p50 [-+][\d.]+ vs echo, [-+][\d.]+ vs echo-marker", run.stdout), run.stdout
    data = json.loads((tmp_path / "lat" / "latency.json").read_text())
    assert data and (tmp_path / "lat" / "latency.png").stat().st_size > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "lat" / "latency.png", ARTIFACTS / "readme-bench-latency.png")

    frames = quality.index("--frames")
    run = subprocess.run([*CAMFX, *quality[:frames + 1], "8", *quality[frames + 2:], "--out", str(tmp_path / "q")],
                         capture_output=True, text=True, timeout=200, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    for figure in ("IoU", "alpha err", "boundary F", "flicker", "blur halo", "replace fringe", "key fringe"):
        assert re.search(rf"^{figure}( x1e-3)?\s+camfx\s", run.stdout, re.M), (figure, run.stdout)
    assert json.loads((tmp_path / "q" / "quality.json").read_text())
    shutil.copy(tmp_path / "q" / "quality-crops-640x480.png", ARTIFACTS / "readme-bench-quality-crops.png")
