"""Where `camfx camera` puts the processed frames: a virtual camera (pyvirtualcam: v4l2loopback on
Linux, OBS Virtual Camera on Windows and macOS), a file (.y4m, .mp4), a preview window.

Each sink runs on a thread of its own behind a one-place slot (newest frame wins, replaced
frames counted): a slow sink (an mp4 encoder, a window) drops frames of its own, and never holds
the camera, the pipeline or another sink.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from av import VideoFrame

log = logging.getLogger("camfx.camera")

MODPROBE = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=camfx"


class SinkError(RuntimeError):
    """An output cannot be opened or written; the message says what to do, in one line."""


class Sink:
    """One output; `open` on the first frame (its size), `write` each frame, `close` at the end."""

    name = "sink"

    def open(self, width: int, height: int, fps: float) -> None: ...

    def write(self, frame: VideoFrame) -> None: ...

    def close(self) -> None: ...


class FileSink(Sink):
    """Every frame into a .y4m (raw I420: what tests compare) or an .mp4 (H.264 when the ffmpeg
    build has it, else MPEG-4 part 2)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(self.path)
        if self.path.suffix.lower() not in (".y4m", ".mp4"):
            raise SinkError(f"{path}: camfx writes .y4m or .mp4 files")
        self._container = self._stream = None
        self.frames = 0

    def open(self, width: int, height: int, fps: float) -> None:
        import av

        try:
            self._container = av.open(str(self.path), "w", format="yuv4mpegpipe" if self.path.suffix.lower() == ".y4m" else None)
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"cannot write {self.path}: {exc}") from None
        rate = Fraction(fps).limit_denominator(1001)
        if self.path.suffix.lower() == ".y4m":
            self._stream = self._container.add_stream("rawvideo", rate=rate)
        else:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._time_base = 1 / rate

    def write(self, frame: VideoFrame) -> None:
        # A frame of this file's own (other outputs read the same picture), numbered in order.
        out = VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
        out.pts, out.time_base = self.frames, self._time_base
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None


def _pyvirtualcam():
    try:
        import pyvirtualcam
    except ImportError:
        raise SinkError("--output virtual needs pyvirtualcam: pip install 'camfx[camera]'") from None
    return pyvirtualcam


class VirtualCameraSink(Sink):
    """The frames as a camera other applications open (Zoom, Meet, Teams, Discord, OBS)."""

    name = "virtual camera"

    def __init__(self, device: str | None = None, camera_factory: Callable | None = None):
        self.device = device
        self._factory = camera_factory
        self._camera = None
        self._i420 = True

    def open(self, width: int, height: int, fps: float) -> None:
        factory = self._factory or _pyvirtualcam().Camera
        pixel_format = _pixel_formats(self._factory is None)
        try:
            try:
                self._camera = factory(width, height, fps, fmt=pixel_format.I420, device=self.device)
            except ValueError:  # this backend takes no I420: RGB then
                self._i420 = False
                self._camera = factory(width, height, fps, fmt=pixel_format.RGB, device=self.device)
        except RuntimeError as exc:
            raise SinkError(_no_virtual_camera(self.device, exc)) from None
        self.device = getattr(self._camera, "device", self.device)
        log.info("virtual camera %s: %dx%d at %g fps (%s)", self.device, width, height, fps,
                 "I420" if self._i420 else "RGB")

    def write(self, frame: VideoFrame) -> None:
        if self._i420:
            picture = frame.to_ndarray(format="yuv420p")
        else:
            picture = frame.to_ndarray(format="rgb24")
        self._camera.send(np.ascontiguousarray(picture))

    def readers(self) -> int | None:
        """Applications that have the camera open now; None where the platform cannot tell."""
        return device_readers(self.device) if self.device else None

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


class _Formats:
    I420, RGB = "I420", "RGB"


def _pixel_formats(real: bool):
    return _pyvirtualcam().PixelFormat if real else _Formats


def _no_virtual_camera(device: str | None, exc: Exception) -> str:
    if sys.platform.startswith("linux"):
        where = f" at {device}" if device else ""
        return (f"no v4l2loopback virtual camera{where} ({exc}). Load it with: {MODPROBE}  "
                "(Chrome and Zoom need exclusive_caps=1), then name it with --device-path /dev/videoN; `camfx doctor` checks each step")
    return (f"no virtual camera ({exc}). Install OBS Studio and start its Virtual Camera once, "
            "then run camfx camera again")


def device_readers(path: str) -> int | None:
    """How many other processes have `path` open (Linux, from /proc); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    target = os.path.realpath(path)
    me, count = os.getpid(), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    count += 1
                    break
            except OSError:
                continue
    return count


class NullSink(Sink):
    """Lets every frame go (benchmarks: the cost and latency up to an output, without one)."""

    name = "null"

    def write(self, frame: VideoFrame) -> None:
        pass


class WindowSink(Sink):
    """A preview window (OpenCV); closing it does not stop the camera."""

    name = "window"

    def open(self, width: int, height: int, fps: float) -> None:
        import cv2

        if not hasattr(cv2, "imshow") or "headless" in getattr(cv2, "__file__", ""):
            raise SinkError("--output window needs an OpenCV with windows (pip install opencv-python); "
                            "this one is headless")

    def write(self, frame: VideoFrame) -> None:
        import cv2

        cv2.imshow("camfx", frame.to_ndarray(format="bgr24"))
        cv2.waitKey(1)

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


class SinkRunner:
    """One sink on its own thread behind a one-place slot: `offer` never waits; a frame replaced
    before the sink took it is counted in `dropped`. The first error stops the sink and is kept."""

    def __init__(self, sink: Sink, fps: float):
        self.sink, self._fps = sink, fps
        self._slot: tuple[VideoFrame, float | None] | None = None
        self.latencies: deque[float] = deque(maxlen=1000)  # seconds from the camera's read to written
        self._cond = threading.Condition()
        self._done = False
        self._opened = False
        self.written = self.dropped = 0
        self.error: SinkError | None = None
        self._thread = threading.Thread(target=self._run, name=f"camfx-sink-{sink.name}", daemon=True)
        self._thread.start()

    def offer(self, frame: VideoFrame, read_at: float | None = None) -> None:
        """Hand over `frame` (read from the camera at `read_at`, time.perf_counter(), if known)."""
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot = (frame, read_at)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._done:
                    self._cond.wait()
                item, self._slot = self._slot, None
                if item is None:  # done, and nothing left to write
                    return
            frame, read_at = item
            try:
                if not self._opened:
                    self.sink.open(frame.width, frame.height, self._fps)
                    self._opened = True
                self.sink.write(frame)
                self.written += 1
                if read_at is not None:
                    self.latencies.append(time.perf_counter() - read_at)
            except SinkError as exc:
                self.error = exc
                return
            except Exception as exc:  # a device that went away, a full disk
                log.debug("%s failed", self.sink.name, exc_info=True)  # the run ends with the one-line error
                self.error = SinkError(f"{self.sink.name} failed: {exc}")
                return

    def close(self, timeout: float = 10.0) -> None:
        """Write what is waiting, then close the sink."""
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._opened:
            self.sink.close()


def make_sink(spec: str, device_path: str | None = None) -> Sink:
    if spec == "virtual":
        _pyvirtualcam()  # a missing package is said before the camera opens
        return VirtualCameraSink(device_path)
    if spec == "window":
        return WindowSink()
    return FileSink(spec)
