"""Where `camfx camera` takes its frames from: the machine's webcam, or a video file played at its
own frame rate (once, or again and again with `loop`). Both are aiortc `MediaPlayer` tracks
(PyAV / ffmpeg underneath, with the platform's capture format: v4l2, avfoundation, dshow)."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiortc import MediaStreamTrack

CAPTURE_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}
PIXEL_FORMATS = {"mjpeg": "mjpeg", "yuyv": "yuyv422"}


class SourceError(ValueError):
    """The input cannot be opened; the message says what to do, in one line."""


class PacedTrack(MediaStreamTrack):
    """A file's frames at the file's own rate. aiortc's player paces by timestamps, which start
    again at 0 each time a looped file starts over: from then on it would send as fast as it
    decodes."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack, fps: float):
        super().__init__()
        self._inner, self._interval = inner, 1.0 / fps
        self._due: float | None = None

    async def recv(self):
        frame = await self._inner.recv()
        now = time.perf_counter()
        self._due = now if self._due is None else max(self._due + self._interval, now - self._interval)
        if self._due > now:
            await asyncio.sleep(self._due - now)
        return frame

    def stop(self) -> None:
        super().stop()
        self._inner.stop()


@dataclass
class Source:
    track: object  # an aiortc MediaStreamTrack of VideoFrames
    player: object  # the MediaPlayer, to stop
    live: bool  # a camera (frames come at its pace), not a file
    description: str
    fps: float | None = None  # the file's own frame rate, or the one asked of the camera

    def close(self) -> None:
        self.track.stop()
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
            rate = float(videos[0].average_rate) if videos and videos[0].average_rate else None
        player = MediaPlayer(str(path), loop=loop)
    except (av.FFmpegError, AssertionError, UnicodeDecodeError) as exc:
        raise SourceError(f"{spec} is not a video file camfx can read ({_short(exc)})") from None
    if player.video is None:
        raise SourceError(f"{spec} has no video")
    track = PacedTrack(player.video, rate or 30.0)
    return Source(track, player, False, f"file {spec}{' (looped)' if loop else ''}", rate)


def _camera_refused(name: str, size, fps, pixel_format, exc) -> str:
    asked = ", ".join(f for f in (size, f"{fps:g} fps" if fps else None, pixel_format) if f)
    if asked:
        return (f"{name} refused {asked} ({_short(exc)}); see what it offers with "
                f"`ffmpeg -f v4l2 -list_formats all -i {name}` and pick one of those")
    return f"cannot open {name} ({_short(exc)}); is another application using it?"


def _short(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[-1].strip() or type(exc).__name__
