"""The outgoing video track: one reader of a stream's processed frames, paced to the source."""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

from aiortc import MediaStreamTrack
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame

from .media.frame_slot import Broadcast

W = TypeVar("W")  # what came with each frame (the pipeline's Work)

LATE_FACTOR = 1.5  # a frame is late after 1.5 source intervals

# (work of the frame sent, or None for a repeat; when; whether the repeat is a deadline miss)
OnSent = Callable[["W | None", float, bool], None]


class OutputTrack(MediaStreamTrack, Generic[W]):
    """Hands its encoder the newest processed frame as soon as it exists. When none comes within
    1.5 source frame intervals, it repeats the last frame it sent (never a black or stalled
    stream) and, if the pipeline had a newer input waiting, counts a deadline miss.

    Each track reads the stream's frames on its own (a slow viewer only skips frames), so one
    stream can feed the peer that sent it, viewers and a virtual camera at once.
    """

    kind = "video"

    def __init__(self, frames: Broadcast[tuple[VideoFrame, W]], frame_interval: Callable[[], float],
                 input_waiting: Callable[[], bool], on_sent: OnSent | None = None,
                 own_frame: Callable[[VideoFrame, W], VideoFrame] | None = None):
        """`own_frame`: for every reader but the first, a frame object of its own for each picture
        (each stamps its own timestamps; the picture's pixels are shared where they can be)."""
        super().__init__()
        self._frames = frames.reader()
        self._frame_interval, self._input_waiting, self._on_sent = frame_interval, input_waiting, on_sent
        self._own_frame = own_frame
        self._start: float | None = None
        self._last_frame: VideoFrame | None = None
        self._last_sent = 0.0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        timeout = None
        if self._last_frame is not None:
            timeout = self._last_sent + LATE_FACTOR * self._frame_interval() - time.perf_counter()
        item = await self._frames.take(timeout)
        frame, work = item if item is not None else (self._last_frame, None)
        if self.readyState != "live" or frame is None:
            raise MediaStreamError
        if work is not None and self._own_frame is not None:
            frame = self._own_frame(frame, work)

        now = time.perf_counter()
        if self._start is None:
            self._start = now
        frame.pts = int((now - self._start) * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        # A repeat is a miss only if a newer input existed; an idle camera is not our lateness.
        missed = work is None and self._input_waiting()
        if self._on_sent is not None:
            self._on_sent(work, now, missed)
        self._last_frame, self._last_sent = frame, now
        return frame
