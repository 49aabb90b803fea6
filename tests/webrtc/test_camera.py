"""`camfx camera`: local mode and the thin client end to end from a .y4m camera to a .y4m output,
live control over its local API, the virtual-camera sink (against a stand-in for pyvirtualcam's
Camera: v4l2loopback cannot be loaded on these machines), pausing when nobody watches, and the
errors people hit, one clear line each."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from camfx.bench.clip import person_clip, write_y4m
from camfx.bench.latency import free_port
from camfx.engine.client.app import CameraApp
from camfx.engine.client.control import control_app
from camfx.engine.client.local import LocalProcessor
from camfx.engine.client.remote import RemoteError, RemoteProcessor
from camfx.engine.client.sinks import FileSink, SinkRunner, VirtualCameraSink, device_readers
from camfx.engine.client.sources import open_source
from camfx.engine.config import ServerConfig
from camfx.engine.media import yuv
from camfx.engine.params import Params
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.transport import http_server

from ..conftest import start_server

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def clip():
    return person_clip(320, 240, 30)


@pytest.fixture(scope="module")
def camera_file(clip, tmp_path_factory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("camera") / "in.y4m", clip)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def masks(clip, segmenter):
    """(person, background) luma masks per clip frame, from the model, confident pixels only."""
    import cv2

    out = []
    for frame in clip:
        h, w = yuv.frame_size(frame)
        prob = cv2.resize(segmenter(frame), (w, h))
        out.append((prob > 0.95, prob < 0.05))
    return out


def green_share(frame: np.ndarray, where: np.ndarray) -> float:
    rgb = yuv.to_rgb(frame)[where].astype(int)
    return float(((rgb[:, 1] - rgb[:, 0] > 120) & (rgb[:, 1] - rgb[:, 2] > 120)).mean())


def camfx(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camfx", "camera", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("camfx camera:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- local mode ------------------------------------------------------------------------------------
@pytest.mark.parametrize("effect", ["remove", "blur", "replace", "none"])
def test_local_mode_from_a_file_to_a_file(camera_file, clip, tmp_path, effect):
    out = tmp_path / "out.y4m"
    result = camfx("--input", str(camera_file), "--output", str(out), "--effect", effect, "--control", "off")
    assert result.returncode == 0, result.stderr
    written = frames_of(out)
    assert len(written) == len(clip)  # a 30-frame file at its own rate: nothing had to be dropped
    # Without --stats the run still says what it did, at its end.
    assert f"camfx camera: wrote {len(written)} frames to {out} (0 dropped)" in result.stderr.splitlines()
    summary = next(line for line in result.stderr.splitlines() if " frames in, " in line)
    assert summary.startswith(f"camfx camera: {len(clip)} frames in, {len(written)} out, 0 dropped; ")
    assert " fps over " in summary and "latency p50 " in summary and ", p95 " in summary
    person_bg = masks(clip, Segmenters().get("landscape"))
    for i in (5, 15, 25):
        person, background = person_bg[i]
        luma_in, luma_out = yuv.planes(clip[i])[0].astype(int), yuv.planes(written[i])[0].astype(int)
        assert np.abs(luma_out[person] - luma_in[person]).mean() < 2  # the person's own pixels
        changed = np.abs(luma_out[background] - luma_in[background]).mean()
        if effect == "remove":
            assert green_share(written[i], background) > 0.95  # keyed
        elif effect == "none":
            assert changed < 1  # passed through
        else:  # blurred or replaced: the background is not the camera's any more
            assert changed > 4, f"{effect}: the background moved by {changed:.1f} grey levels only"


def test_several_outputs_at_once_each_get_every_frame(camera_file, clip, tmp_path):
    raw, mp4 = tmp_path / "out.y4m", tmp_path / "out.mp4"
    result = camfx("--input", str(camera_file), "--output", str(raw), "--output", str(mp4), "--effect", "remove",
                   "--control", "off")
    assert result.returncode == 0, result.stderr
    assert len(frames_of(raw)) == len(clip)
    with av.open(str(mp4)) as container:
        decoded = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    assert len(decoded) == len(clip) and decoded[0].shape == clip[0].shape
    background = masks(clip[:1], Segmenters().get("landscape"))[0][1]
    assert green_share(decoded[0], background) > 0.9  # the processed picture, through a lossy codec


def test_ctrl_c_stops_cleanly_and_leaves_a_whole_file(camera_file, tmp_path):
    import signal

    out = tmp_path / "live.y4m"
    proc = subprocess.Popen([sys.executable, "-m", "camfx", "camera", "--input", str(camera_file), "--loop",
                             "--output", str(out), "--control", "off", "--effect", "blur"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 10 * clip_bytes(camera_file)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "no frames"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert len(frames_of(out)) > 10  # every frame written is whole: the file reads to its end


def clip_bytes(camera_file: Path) -> int:
    """About one frame of the camera file, in bytes."""
    with av.open(str(camera_file)) as container:
        stream = container.streams.video[0]
        return stream.width * stream.height * 3 // 2


def test_a_size_the_camera_refuses_is_one_clear_line(monkeypatch):
    """No camera exists here: a device that is there and refuses, as FFmpeg reports it (EINVAL),
    stands in for one."""
    from aiortc.contrib import media

    from camfx.engine.client import sources

    def refusing_player(name, format=None, options=None):
        raise av.FFmpegError(22, "Invalid argument")

    exists = Path.exists
    monkeypatch.setattr(media, "MediaPlayer", refusing_player)
    monkeypatch.setattr(Path, "exists", lambda path: str(path) == "/dev/video7" or exists(path))
    with pytest.raises(sources.SourceError, match=r"^/dev/video7 refused 4000x3000, 30 fps, mjpeg \(Invalid argument\); "
                                                  r"see what it offers with `ffmpeg -f v4l2 -list_formats all"):
        open_source("/dev/video7", "4000x3000", 30.0, "mjpeg")
    with pytest.raises(sources.SourceError, match="cannot open /dev/video7 .*another application"):
        open_source("7")


async def test_frames_out_plus_counted_drops_are_the_frames_in_and_params_change_live(camera_file, clip, tmp_path):
    out = tmp_path / "live.y4m"
    source = open_source(str(camera_file), loop=True)
    app = CameraApp(source, LocalProcessor(ServerConfig(), Params(effect="none")),
                    [SinkRunner(FileSink(out), 30.0)])
    port = free_port()
    control = await http_server.start(control_app(app, "127.0.0.1"), "127.0.0.1", port)
    started = time.monotonic()
    run = asyncio.ensure_future(app.run_until_done())
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.5)
            async with http.post(f"http://127.0.0.1:{port}/params", json={"effect": "remove"}) as resp:
                assert resp.status == 200 and (await resp.json())["effect"] == "remove"
            async with http.post(f"http://127.0.0.1:{port}/params", json={"blur_strength": 500}) as resp:
                assert resp.status == 422 and (await resp.json())["errors"][0]["field"] == "blur_strength"
            await asyncio.sleep(1.5)
            async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                stats = await resp.json()
            async with http.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200 and "camera-page.js" in await resp.text()
        assert stats["effect"] == "remove" and stats["fps_out"] > 0
    finally:
        app.stop_event.set()
        await run
        await control.cleanup()
    elapsed = time.monotonic() - started
    written = frames_of(out)
    processor = app.processor.stream
    runner = app.runners[0]
    accounted = runner.written + runner.dropped + app.run.skipped + processor.stats()["frames_dropped"]
    assert len(written) == runner.written
    assert 0 <= processor.frames_in - accounted <= 2  # all counted but the frames in flight at the stop
    assert processor.frames_in <= 30 * elapsed + 5  # a looped file still plays at its own rate, no faster
    background = masks(clip[:1], Segmenters().get("landscape"))[0][1]
    assert green_share(written[5], background) < 0.05  # before the change: the camera's own picture
    assert green_share(written[-1], background) > 0.5  # after it: keyed


def test_no_output_rate_is_shown_before_a_whole_window_is_measured():
    """Two frames 10 ms apart are not "out 99.0 fps": the rate waits for a whole window."""
    from camfx.engine.client.app import RATE_WINDOW_S, CameraRun

    run = CameraRun()
    run.out_at(100.0, 5.0)
    run.out_at(100.0101, 5.0)
    assert run.fps_out() is None
    for i in range(2, 32):
        run.out_at(100.0 + i / 30, 5.0)
    assert run.out_times[-1] - run.first_out >= RATE_WINDOW_S
    assert run.fps_out() == pytest.approx(30.0, rel=0.1)
    assert run.latency.percentile(50) == pytest.approx(5.0, abs=0.1) and run.latency.count == 32


async def test_closing_the_preview_page_is_not_an_error(caplog):
    """A page that leaves the MJPEG preview ends it quietly: no ERROR, no traceback."""
    import logging
    import threading
    import types

    from av import VideoFrame

    def frame():
        return VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), format="bgr24")

    camera = types.SimpleNamespace(preview=frame(), processor=None, stop_event=threading.Event())
    port = free_port()
    control = await http_server.start(control_app(camera, "127.0.0.1"), "127.0.0.1", port)
    caplog.set_level(logging.INFO)
    try:
        for _ in range(2):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/preview.mjpg") as resp:
                    assert b"image/jpeg" in await resp.content.read(100)
                    camera.preview = frame()  # a new frame to send: the write finds the page gone
            await asyncio.sleep(0.5)
    finally:
        await control.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
    assert "preview: the page left" in caplog.text


def test_library_log_lines_are_hidden_unless_verbose():
    """aioice writes INFO lines on every connection: not in the terminal unless -v."""
    import logging

    from camfx.engine import logs

    root = logging.getLogger().level
    try:
        logs.setup("INFO")
        assert logging.getLogger("camfx.camera").isEnabledFor(logging.INFO)
        assert not logging.getLogger("aioice.ice").isEnabledFor(logging.INFO)
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.WARNING)
        logs.setup("INFO", verbose=True)
        assert logging.getLogger("aioice.ice").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger().setLevel(root)
        for name in (*logs.LIBRARIES, "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)


# ---- the virtual camera ---------------------------------------------------------------------------
class FakeCamera:
    """Stands in for pyvirtualcam.Camera (v4l2loopback cannot be loaded on these machines)."""

    made: list["FakeCamera"] = []

    def __init__(self, width, height, fps, fmt, device=None):
        # No device path unless given: who has it open cannot be told, so nothing pauses.
        self.width, self.height, self.fps, self.fmt, self.device = width, height, fps, fmt, device
        self.frames: list[np.ndarray] = []
        self.closed = False
        FakeCamera.made.append(self)

    def send(self, frame):
        assert not self.closed and frame.flags.c_contiguous
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


async def test_the_virtual_camera_gets_every_frame_in_order_and_is_released(clip, tmp_path):
    from camfx.engine.media import frame_ids

    stamped = []
    for i, frame in enumerate(clip[:20]):
        copy = frame.copy()
        frame_ids.stamp(copy, i)
        stamped.append(copy)
    source = open_source(str(write_y4m(tmp_path / "ids.y4m", stamped)))
    FakeCamera.made.clear()
    sink = VirtualCameraSink(camera_factory=FakeCamera)
    app = CameraApp(source, LocalProcessor(ServerConfig(), Params(effect="blur", probe=True)), [SinkRunner(sink, 30.0)])
    assert await app.run_until_done() == 0
    (camera,) = FakeCamera.made
    assert (camera.width, camera.height, camera.fps, camera.fmt) == (320, 240, 30.0, "I420")
    ids = [frame_ids.read(frame) for frame in camera.frames]
    assert ids == sorted(ids) and len(ids) >= 18 and camera.closed  # in order, and released at the end
    assert camera.frames[0].shape == (240 * 3 // 2, 320)


def test_a_missing_virtual_camera_device_says_how_to_load_it(camera_file):
    line = one_line(camfx("--input", str(camera_file), "--output", "virtual", "--control", "off"))
    assert "modprobe v4l2loopback" in line and "exclusive_caps=1" in line


def test_who_has_a_device_open_is_read_from_proc(tmp_path):
    device = tmp_path / "video99"
    device.write_bytes(b"")
    assert device_readers(str(device)) == 0
    holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(device)!r}); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while device_readers(str(device)) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
    assert device_readers(str(device)) == 0


async def test_processing_pauses_while_nobody_watches_the_virtual_camera(camera_file, tmp_path):
    device = tmp_path / "video98"
    device.write_bytes(b"")
    sink = VirtualCameraSink(str(device), camera_factory=FakeCamera)
    source = open_source(str(camera_file), loop=True)
    app = CameraApp(source, LocalProcessor(ServerConfig(), Params(effect="blur")), [SinkRunner(sink, 30.0)])
    run = asyncio.ensure_future(app.run_until_done())
    try:
        await asyncio.sleep(2.5)
        stream = app.processor.stream
        assert app.paused and stream.frames_paused > 20  # nobody has it open: frames are let go
        processed = stream.frames_in
        holder = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(device)!r}); time.sleep(60)"])
        try:
            await asyncio.sleep(2.5)
            assert not app.paused and stream.frames_in > processed + 20  # an application opened it
        finally:
            holder.kill()
            holder.wait()
    finally:
        app.stop_event.set()
        await run


# ---- the thin client --------------------------------------------------------------------------------
class Server:
    """camfx serve in this process, on a port that stays the same across restarts."""

    def __init__(self, ssl_context=None, **config):
        self.port = free_port()
        self.config = dict(config)
        self.ssl_context = ssl_context
        self.runner = None

    async def start(self):
        self.runner, _ = await start_server(ServerConfig(**self.config), port=self.port, ssl_context=self.ssl_context)

    async def stop(self):
        await self.runner.cleanup()

    @property
    def url(self):
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"


async def test_the_thin_client_survives_the_server_going_away_and_coming_back(clip, tmp_path):
    server = Server()
    await server.start()
    source = open_source(str(write_y4m(tmp_path / "long.y4m", clip)), loop=True)
    out = tmp_path / "remote.y4m"
    processor = RemoteProcessor(server.url, Params(effect="remove"))
    app = CameraApp(source, processor, [SinkRunner(FileSink(out), 30.0)])
    run = asyncio.ensure_future(app.run_until_done())
    marks = {}
    try:
        await asyncio.sleep(3)
        assert processor.state == "connected" and app.stats()["latency_ms_p50"] > 0
        marks["down"] = app.runners[0].written
        await server.stop()  # the server goes away mid-stream
        await asyncio.sleep(4)
        assert processor.state == "reconnecting"
        marks["up"] = app.runners[0].written
        await server.start()
        deadline = time.monotonic() + 30
        while processor.state != "connected":
            assert time.monotonic() < deadline, "the client did not come back"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
    finally:
        app.stop_event.set()
        await run
        await server.stop()
    written = frames_of(out)
    assert marks["up"] - marks["down"] > 60  # the output never stopped while the server was gone
    background = masks(clip[:1], Segmenters().get("landscape"))[0][1]
    keyed = [green_share(f, background) > 0.5 for f in written]
    assert any(keyed[:marks["down"]])  # processed at first
    assert not any(keyed[marks["down"] + 45:marks["up"]])  # the camera's own picture meanwhile (never black)
    assert all(f[16:].mean() > 20 for f in written[marks["down"]:marks["up"]])
    assert any(keyed[marks["up"] + 30:])  # processed again
    assert processor.reconnects >= 1


@pytest.mark.parametrize("setup, expected", [
    ("unreachable", "cannot reach"),
    ("wrong token", "refused the token"),
])
async def test_thin_client_errors_are_one_line(camera_file, setup, expected):
    server = Server(token="right")
    if setup == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        await server.start()
        url = server.url
    try:
        source = open_source(str(camera_file))
        app = CameraApp(source, RemoteProcessor(url, Params(), token="wrong"), [SinkRunner(FileSink("/dev/null.y4m"), 30)])
        with pytest.raises(RemoteError, match=expected):
            await app.run_until_done()
    finally:
        if setup != "unreachable":
            await server.stop()


async def test_the_thin_client_reaches_a_self_signed_server_only_when_told_to(camera_file, clip, tmp_path):
    """A `serve --tls self-signed` box: refused with a line that says what to do, then used with
    insecure; the client takes the STUN / TURN servers the server hands out."""
    from camfx.engine.transport import ice, tls

    cert, key = tls.self_signed(tmp_path)
    stun = ice.ice_server("stun:127.0.0.1:3478")  # loopback: nothing leaves the machine
    server = Server(ssl_context=tls.server_context(cert, key), token="t", ice_servers=(stun,))
    await server.start()
    try:
        refused = CameraApp(open_source(str(camera_file)), RemoteProcessor(server.url, Params(), token="t"),
                            [SinkRunner(FileSink(tmp_path / "refused.y4m"), 30)])
        with pytest.raises(RemoteError, match="does not trust.*--insecure"):
            await refused.run_until_done()

        source = open_source(str(write_y4m(tmp_path / "long.y4m", clip)), loop=True)
        processor = RemoteProcessor(server.url, Params(effect="remove"), token="t", insecure=True)
        app = CameraApp(source, processor, [SinkRunner(FileSink(tmp_path / "tls.y4m"), 30.0)])
        run = asyncio.ensure_future(app.run_until_done())
        try:
            deadline = time.monotonic() + 30
            while not (processor.state == "connected" and processor.stats()["fps_back"] > 0):
                assert time.monotonic() < deadline and not run.done(), "no frames back over https"
                await asyncio.sleep(0.2)
            assert [s.urls for s in processor.ice_servers] == ["stun:127.0.0.1:3478"]
        finally:
            app.stop_event.set()
            await run
    finally:
        await server.stop()
    background = masks(clip[:1], Segmenters().get("landscape"))[0][1]
    assert any(green_share(f, background) > 0.5 for f in frames_of(tmp_path / "tls.y4m"))  # processed there


@pytest.mark.parametrize("args, expected", [
    (["--server", "http://127.0.0.1:1", "--ice-server", "bogus:1"], "--ice-server: 'bogus:1' is not a STUN or TURN URL"),
    (["--server", "http://127.0.0.1:1", "--ice-server", "turn:127.0.0.1:3478"], "needs --ice-username"),
])
def test_bad_remote_settings_are_one_clear_line(args, expected, camera_file):
    assert expected in one_line(camfx("--input", str(camera_file), "--output", "/tmp/camfx-test.y4m",
                                      "--control", "off", *args))


def test_remote_only_flags_without_a_server_are_refused(camera_file):
    result = camfx("--input", str(camera_file), "--insecure")
    assert result.returncode == 2 and "add --server URL" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--input", "/dev/video99"], "there is no camera at /dev/video99"),
    (["--input", "/nonexistent/clip.y4m"], "there is no file"),
    (["--output", "out.avi"], "writes .y4m or .mp4"),
    (["--server", "http://127.0.0.1:1", "--output", "/tmp/camfx-test.y4m"], "cannot reach"),
])
def test_bad_input_is_one_clear_line(args, expected, camera_file):
    if args[0] != "--input":
        args = ["--input", str(camera_file), *args]
    assert expected in one_line(camfx(*args, "--control", "off"))


def test_a_file_that_is_not_video_is_one_clear_line(tmp_path):
    bogus = tmp_path / "notes.y4m"
    bogus.write_text("these are not frames")
    assert "is not a video file" in one_line(camfx("--input", str(bogus), "--control", "off"))


def test_the_control_port_in_use_is_one_line(camera_file):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line(camfx("--input", str(camera_file), "--output", "/tmp/camfx-test.y4m",
                              "--control", f"127.0.0.1:{port}"))
    assert "in use" in line



async def test_a_looped_file_is_read_no_further_ahead_than_two_frames(camera_file):
    """The decoder waits for the reader: a looped file that nobody reads holds two frames, not
    the whole of it again and again (aiortc's player once filled 22 GB that way)."""
    source = open_source(str(camera_file), loop=True)
    try:
        await source.track.recv()
        await asyncio.sleep(1.0)  # nobody reads for 30 frames' time
        assert source.track._queue.qsize() <= source.track.AHEAD
        for _ in range(40):  # and it goes on past the end of the file, at the file's rate
            await source.track.recv()
    finally:
        source.close()
