"""Looped video backgrounds (mp4, webm, gif), decoded with PyAV off the frame path.

`probe` checks an upload from its container header before anything big is decoded (the
frame size, the duration, the number of streams), counts its frames by demuxing (no decoding)
and decodes its first frame, which is shown until playback has a picture.

A `Player` is one decoder thread for one video in use. It decodes ahead by a few frames into a
ring (RING frames; when it is full the oldest is dropped: newest wins), each frame scaled once
to every frame size and fit in use (one asked for later is added to the frames already there).
The frame path calls `current`, which picks the newest
picture due by the wall clock at the video's own frame rate and never waits. After the last
frame the file is read again from the start, ahead of time, so frame 0 follows frame N - 1 one
frame period later, like any other. The thread ends when nobody has asked for a picture for
`idle_stop_s` seconds.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from . import fit

log = logging.getLogger("camfx.backgrounds")

MAX_VIDEO_PIXELS = 1920 * 1080  # per frame: every frame is decoded, unlike a still's one
MAX_VIDEO_SECONDS = 60.0
MAX_VIDEO_FRAMES = 3600
MAX_STREAMS = 8  # a video with a few audio and subtitle tracks is fine; more is not a background
MIN_FPS, MAX_FPS = 1.0, 60.0
RING = 3  # frames decoded (the one due now and those ahead), per player
MAX_VIEWS = 4  # frame sizes and fits a video is scaled to at once
IDLE_STOP_S = 5.0

View = tuple[int, int, str, tuple[int, int, int]]  # (height, width, fit, bar colour)

_MAGIC = (b"GIF87a", b"GIF89a", b"\x1a\x45\xdf\xa3")  # gif, webm / matroska


class VideoError(ValueError):
    """An upload that is not a usable video; the message is written for the user."""


class UnreadableVideo(VideoError):
    """Not a video FFmpeg can read at all (perhaps not a video)."""


def looks_like_video(data: bytes) -> bool:
    """mp4 / mov (an `ftyp` box first), webm / mkv or gif, from the first bytes."""
    return data.startswith(_MAGIC) or data[4:8] == b"ftyp"


@dataclass(frozen=True)
class Clip:
    """A probed video: its file, shape, rate and first frame."""

    data: bytes
    width: int
    height: int
    fps: float
    frames: int
    first: av.VideoFrame

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def probe(data: bytes) -> Clip:
    """Check `data` as a video background and read its first frame. Raises VideoError."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams
            if len(streams) > MAX_STREAMS:
                raise VideoError(f"the file has {len(streams)} streams; a background video may have "
                                 f"at most {MAX_STREAMS}")
            if not streams.video:
                raise VideoError("the file holds no video")
            stream = streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                raise UnreadableVideo("the video does not say its frame size")
            if width * height > MAX_VIDEO_PIXELS:
                raise VideoError(f"the video is {width}x{height}; background videos are limited to "
                                 f"1920x1080 pixels (scale it down first)")
            declared = _declared_seconds(container, stream)
            if declared is not None and declared > MAX_VIDEO_SECONDS:
                raise VideoError(f"the video lasts {declared:.0f} s; background videos are limited to "
                                 f"{MAX_VIDEO_SECONDS:.0f} s (it loops: a few seconds are enough)")
            frames = 0
            for packet in container.demux(stream):
                if packet.size:
                    frames += 1
                    if frames > MAX_VIDEO_FRAMES:
                        raise VideoError(f"the video has more than {MAX_VIDEO_FRAMES} frames; background "
                                         f"videos are limited to {MAX_VIDEO_SECONDS:.0f} s")
            if frames == 0:
                raise VideoError("the video has no frames; is the file complete?")
            fps = _frame_rate(stream, frames, declared)
        first = _first_frame(data)
    except VideoError:
        raise
    except EOFError:  # FFmpeg's too
        raise VideoError("the video ends before its first frame; is the file complete?") from None
    except (av.FFmpegError, OSError, ValueError, IndexError):
        # FFmpeg's text names the demuxer that choked, which is no use to the user.
        raise UnreadableVideo("the upload is not a readable video; send an MP4, WebM or GIF file") from None
    if frames / fps > MAX_VIDEO_SECONDS:
        raise VideoError(f"the video lasts {frames / fps:.0f} s; background videos are limited to "
                         f"{MAX_VIDEO_SECONDS:.0f} s")
    return Clip(data, width, height, fps, frames, first)


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_rate(stream, frames: int, seconds: float | None) -> float:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if not MIN_FPS <= fps <= MAX_FPS and seconds:  # a gif's rate comes from its frame delays
        fps = frames / seconds
    return min(MAX_FPS, max(MIN_FPS, fps)) if math.isfinite(fps) and fps > 0 else 25.0


def _first_frame(data: bytes) -> av.VideoFrame:
    for frame in _decode_once(data):
        return frame
    raise VideoError("no frame of the video could be decoded")


def scaled_picture(frame: av.VideoFrame, view: View, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """`frame` fitted to `view` as I420: FFmpeg scales and converts it to RGB in one pass, at the
    size the fit needs, then it is cropped or set on bars. A `reformatter` is one thread's own."""
    height, width, fit_mode, colour = view
    sh, sw = fit.scaled_size(frame.height, frame.width, height, width, fit_mode)
    scaled = (reformatter or VideoReformatter()).reformat(frame, width=sw, height=sh, format="rgb24",
                                                          interpolation="AREA")
    return fit.place(scaled.to_ndarray(), height, width, colour)


def _decode_once(data: bytes) -> Iterator[av.VideoFrame]:
    """Every frame of the file once; a frame that cannot be decoded ends the pass."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # one core per video at most: the frames' pools need the rest
        try:
            yield from container.decode(stream)
        except (av.FFmpegError, OSError, ValueError, EOFError):
            return


def _frames_forever(data: bytes) -> Iterator[av.VideoFrame]:
    while True:
        decoded = False
        for frame in _decode_once(data):
            decoded = True
            yield frame
        if not decoded:
            return


class Player:
    """One video's decoder thread and its ring of pictures (see the module's docstring)."""

    def __init__(self, clip: Clip, clock: Callable[[], float] = time.monotonic, idle_stop_s: float = IDLE_STOP_S,
                 name: str = "video"):
        self._clip = clip
        self._clock = clock
        self._idle_stop_s = idle_stop_s
        self._cond = threading.Condition()
        self._views: dict[View, float] = {}  # view -> when it was last asked for
        self._ring: list[_Entry] = []  # oldest first
        self.started = clock()  # frame 0 is due then
        self._last_used = self.started
        self._stopping = False
        self.failed = False  # the decoder hit an error: not to be restarted
        self._thread = threading.Thread(target=self._run, name=f"camfx-video-{name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def fps(self) -> float:
        return self._clip.fps

    @property
    def native_id(self) -> int | None:
        """The decoder thread's id in the OS (for per-thread CPU time)."""
        return self._thread.native_id

    def current(self, view: View) -> tuple[int, np.ndarray] | None:
        """(frame number, I420 picture) due now at `view`, or None while none is decoded yet.
        Never waits for the decoder."""
        with self._cond:
            now = self._clock()
            self._last_used = now
            new_view = view not in self._views
            self._views[view] = now
            if len(self._views) > MAX_VIEWS:  # the one asked for longest ago goes
                del self._views[min(self._views, key=self._views.__getitem__)]
            due = int((now - self.started) * self._clip.fps)
            shown = None
            for entry in self._ring:
                if entry.number <= due and view in entry.pictures:
                    shown = (entry.number, entry.pictures[view])
            if new_view or not self._ring or self._ring[-1].number <= due:
                self._cond.notify()  # a new size to scale to, or room to decode ahead
            return shown

    def stop(self, wait: bool = True) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        frames = _frames_forever(self._clip.data)
        reformatters: dict[View, VideoReformatter] = {}

        def scaled(frame: av.VideoFrame, views: list[View]) -> dict[View, np.ndarray]:
            return {view: scaled_picture(frame, view, reformatters.setdefault(view, VideoReformatter()))
                    for view in views}

        try:
            for number, frame in enumerate(frames):
                while True:
                    job = self._next_job(number)
                    if job is None:
                        return
                    views, entry = job
                    if entry is None:
                        break
                    # A size or fit asked for since these pictures were made: add it to them.
                    pictures = scaled(entry.frame, views)
                    with self._cond:
                        entry.pictures.update(pictures)
                if not views:
                    continue  # behind the clock: decoded (later frames need it), never shown
                entry = _Entry(number, frame, scaled(frame, views))
                with self._cond:
                    self._ring.append(entry)
                    del self._ring[:-RING]  # newest wins
        except Exception:
            self.failed = True
            log.exception("the video background decoder failed; its first frame stays")
        finally:
            frames.close()  # the open container, now
            with self._cond:
                self._ring.clear()

    def _next_job(self, number: int) -> tuple[list[View], _Entry | None] | None:
        """What to do next, once there is something: (views, a ring entry) to add pictures at
        views to that entry; (views, None) to scale frame `number` to views ([] when it is
        already late: a later frame will be shown instead); None to stop."""
        with self._cond:
            while True:
                now = self._clock()
                if self._stopping or now - self._last_used > self._idle_stop_s:
                    return None
                due = int((now - self.started) * self._clip.fps)
                views = [view for view, used in self._views.items() if used >= now - self._idle_stop_s]
                shown = [i for i, entry in enumerate(self._ring) if entry.number <= due]
                for entry in self._ring[shown[-1] if shown else 0 :]:  # the one due now and those ahead
                    missing = [view for view in views if view not in entry.pictures]
                    if missing:
                        return missing, entry
                ahead = sum(1 for entry in self._ring if entry.number > due)
                if ahead < RING - 1 and views:  # keep the one due now, fill the rest ahead
                    # A late frame is decoded but not scaled (it would never show), so the
                    # decoder catches up; one every half second is, should it never catch up.
                    newest = self._ring[-1].number if self._ring else -1
                    late = number < due and number - newest < self._clip.fps / 2
                    return ([] if late else views), None
                next_due = self.started + (due + 1) / self._clip.fps
                self._cond.wait(timeout=min(max(next_due - now, 0.001), 0.25))


@dataclass
class _Entry:
    """One decoded frame in a player's ring and its pictures, one per view."""

    number: int  # counting on through the loops
    frame: av.VideoFrame
    pictures: dict[View, np.ndarray]
