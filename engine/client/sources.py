"""Where `camfx camera` takes its frames from: the machine's webcam (an aiortc `MediaPlayer`
track: PyAV / ffmpeg with the platform's capture format, v4l2, avfoundation or dshow), or a video
file played at its own frame rate, once or again and again with `loop` (`FileTrack`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger("camfx.camera")

CAPTURE_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}
PIXEL_FORMATS = {"mjpeg": "mjpeg", "yuyv": "yuyv422"}


class SourceError(ValueError):
    """The input cannot be opened; the message says what to do, in one line."""


class FileTrack(MediaStreamTrack):
    """A video file's frames at the file's own rate, once or (`loop`) again and again.

    A thread decodes into a two-place queue and waits while it is full, so memory stays bounded
    whatever the file's length. (aiortc's MediaPlayer paces by timestamps, which start again at 0
    when a looped file starts over: from then on it decoded as fast as it could into a queue
    without bound, 22 GB in a few minutes of 720p.)
    """

    kind = "video"
    AHEAD = 2

    def __init__(self, path: str, fps: float, loop: bool = False):
        super().__init__()
        self._path, self._interval, self._loop_file = path, 1.0 / fps, loop
        self._queue: asyncio.Queue | None = None
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._due: float | None = None

    def _decode(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        import av

        def put(item) -> bool:
            """Into the queue, waiting while it is full; False once the track or its loop is gone."""
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the event loop has closed
                return False
            while not self._quit.is_set():
                try:
                    future.result(timeout=0.2)
                    return True
                except concurrent.futures.TimeoutError:
                    continue
                except concurrent.futures.CancelledError:
                    return False
            future.cancel()
            return False

        try:
            with av.open(self._path) as container:
                while not self._quit.is_set():
                    for frame in container.decode(video=0):
                        if not put(frame):
                            return
                    if not self._loop_file:
                        break
                    container.seek(0)
        except av.FFmpegError as exc:
            log.warning("%s: %s", self._path, exc)
        put(None)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue is None:
            self._queue = asyncio.Queue(self.AHEAD)
            self._thread = threading.Thread(target=self._decode, args=(asyncio.get_running_loop(), self._queue),
                                            name="camfx-file", daemon=True)
            self._thread.start()
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        now = time.perf_counter()
        self._due = now if self._due is None else max(self._due + self._interval, now - self._interval)
        if self._due > now:
            await asyncio.sleep(self._due - now)
        return frame

    def stop(self) -> None:
        super().stop()
        self._quit.set()


@dataclass
class Source:
    track: object  # an aiortc MediaStreamTrack of VideoFrames
    player: object | None  # the camera's MediaPlayer, to stop
    live: bool  # a camera (frames come at its pace), not a file
    description: str
    fps: float | None = None  # the file's own frame rate, or the one asked of the camera

    def close(self) -> None:
        self.track.stop()
        if self.player is not None:
            for track in (self.player.audio, self.player.video):
                if track is not None:
                    track.stop()


def is_device(spec: str) -> bool:
    """A camera: /dev/video*, a number (the n-th camera), or the platform's device syntax."""
    return spec.startswith("/dev/video") or spec.isdigit() or spec.startswith("video=") or sys.platform == "darwin" and ":" in spec


def open_source(spec: str, size: str | None = None, fps: float | None = None, pixel_format: str | None = None,
                loop: bool = False) -> Source:
    """Open `spec` (a device or a file). Raises SourceError with a message for the user."""
    import av
    from aiortc.contrib.media import MediaPlayer

    if is_device(spec):
        platform = "linux" if sys.platform.startswith("linux") else sys.platform
        capture = CAPTURE_FORMATS.get(platform)
        if capture is None:
            raise SourceError(f"no camera capture on {sys.platform}; pass a video file to --input instead")
        name = spec
        if capture == "v4l2" and spec.isdigit():
            name = f"/dev/video{spec}"
        elif capture == "dshow" and not spec.startswith("video="):
            name = f"video={spec}"
        options = {}
        if size:
            options["video_size"] = size
        if fps:
            options["framerate"] = f"{fps:g}"
        if pixel_format:
            options["input_format" if capture == "v4l2" else "pixel_format"] = PIXEL_FORMATS[pixel_format]
        if capture == "v4l2" and not Path(name).exists():
            raise SourceError(f"there is no camera at {name} (see `ls /dev/video*`; a laptop's built-in camera is "
                              "usually /dev/video0)")
        try:
            player = MediaPlayer(name, format=capture, options=options)
        except av.FFmpegError as exc:
            raise SourceError(_camera_refused(name, size, fps, pixel_format, exc)) from None
        if player.video is None:
            raise SourceError(f"{name} gives no video")
        return Source(player.video, player, True, f"camera {name}", fps)

    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"there is no file {spec} (and it does not look like a camera such as /dev/video0)")
    try:
        with av.open(str(path)) as container:
            videos = container.streams.video
            if not videos:
                raise SourceError(f"{spec} has no video")
            rate = float(videos[0].average_rate) if videos[0].average_rate else None
            next(container.decode(video=0))  # it opens; does it decode?
    except (av.FFmpegError, StopIteration, UnicodeDecodeError) as exc:
        raise SourceError(f"{spec} is not a video file camfx can read ({_short(exc)})") from None
    track = FileTrack(str(path), rate or 30.0, loop)
    return Source(track, None, False, f"file {spec}{' (looped)' if loop else ''}", rate)


def _camera_refused(name: str, size, fps, pixel_format, exc) -> str:
    asked = ", ".join(f for f in (size, f"{fps:g} fps" if fps else None, pixel_format) if f)
    if asked:
        return (f"{name} refused {asked} ({_short(exc)}); see what it offers with "
                f"`ffmpeg -f v4l2 -list_formats all -i {name}` and pick one of those")
    return f"cannot open {name} ({_short(exc)}); is another application using it?"


def _short(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[-1].strip() or type(exc).__name__
