"""The outgoing video track: the newest processed frame, paced to the source."""

from __future__ import annotations

import fractions
import time
from typing import TYPE_CHECKING

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

if TYPE_CHECKING:
    from .session import Session

CLOCK_RATE = 90_000  # the RTP video clock
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
LATE_FACTOR = 1.5  # a frame is late after 1.5 source intervals


class ProcessedTrack(MediaStreamTrack):
    """Hands the encoder the newest processed frame as soon as it exists. When none comes within
    1.5 source frame intervals, it repeats the last frame sent (never a black or stalled stream)
    and, if the pipeline was busy, counts a deadline miss."""

    kind = "video"

    def __init__(self, session: "Session"):
        super().__init__()
        self._session = session
        self._start: float | None = None
        self._last_frame: VideoFrame | None = None
        self._last_sent = 0.0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        session = self._session
        timeout = None
        if self._last_frame is not None:
            timeout = self._last_sent + LATE_FACTOR * session.frame_interval - time.perf_counter()
        item = await session.outbox.take(timeout)
        frame, work = item if item is not None else (self._last_frame, None)
        if self.readyState != "live":
            raise MediaStreamError

        now = time.perf_counter()
        if self._start is None:
            self._start = now
        frame.pts = int((now - self._start) * CLOCK_RATE)
        frame.time_base = TIME_BASE
        # A repeat is a miss only if a newer input existed; an idle camera is not our lateness.
        missed = work is None and (session.busy or session.inbox.pending)
        session.record_sent(work, now, missed)
        self._last_frame, self._last_sent = frame, now
        return frame
