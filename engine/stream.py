"""One stream's processing core, whatever carries it (a WebRTC peer, a WHIP publisher, a local
camera):

    input track --ingest--> FrameSlot --worker (executor)--> Broadcast --> OutputTrack, one per reader

Ingest takes every decoded frame as soon as it exists; the inbox keeps only the newest, so a
slow pipeline drops frames (counted) instead of adding latency. Processed frames go to a
broadcast that any number of output tracks read at their own pace: the sender back to the peer,
viewers, a virtual camera. The stream owns its tasks (a TaskSet) and knows nothing of peer
connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from .media import frames
from .media.frame_slot import Broadcast, BroadcastReader, FrameSlot
from .media.rate import RateMeter
from .params import Params
from .pipeline.budget import BudgetController
from .pipeline.stages import Work
from .tasks import TaskSet
from .tracks import OutputTrack

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("camfx.stream")

B_FRAME = 3  # av.video.frame.PictureType.B
STAGE_SMOOTHING = 0.9  # weight of the previous value in the per-stage moving averages


class Stream:
    """The processing core of one stream: `start(track)` feeds it, `subscribe()` reads it.

    on_input_ended: called once when the input track ends. on_error(field, message): errors a
    user should see that happen outside a request (the diffusion model failed to load, say).
    """

    def __init__(self, hub: "Hub", params: Params, name: str,
                 on_input_ended: Callable[[], None] = lambda: None,
                 on_error: Callable[[str, str], None] = lambda field, message: None):
        self.name = name
        self.params = params
        self.budget = BudgetController()
        self._hub = hub
        self._pipeline = hub.new_pipeline()
        self._metrics = hub.metrics
        self._on_input_ended, self._on_error = on_input_ended, on_error
        self._inbox: FrameSlot[tuple[VideoFrame, float]] = FrameSlot()
        self._processed: Broadcast[tuple[VideoFrame, Work]] = Broadcast()
        self._busy = False  # the worker holds a frame
        self.tasks = TaskSet(f"stream {name}")
        self._outputs: list[OutputTrack] = []
        self._in_rate, self._out_rate = RateMeter(), RateMeter()
        self._stage_ms: dict[str, float] = {}
        self._latency_ms: deque[float] = deque(maxlen=120)
        self.frames_in = self.frames_out = self.deadline_misses = 0
        self.last_input = 0.0  # time.perf_counter() of the newest input frame
        self.warning: str | None = None  # what is wrong with the input, for the user
        self.paused = False  # frames are read and let go unprocessed (nobody watches)
        self.frames_paused = 0
        self.closed = False

    # ---- in and out -------------------------------------------------------------------------
    def start(self, track: MediaStreamTrack) -> None:
        """Process the frames of `track` from now on."""
        self.tasks.spawn(self._ingest(track))
        self.tasks.spawn(self._work())

    def subscribe(self, own_frames: bool = True) -> OutputTrack:
        """A new reader of the processed frames. Each gets frame objects of its own (each stamps
        its own timestamps), but one reader may take the stream's own with `own_frames=False`
        (the peer's way back: no wrapper per frame). The oldest reader's counts are the stream's
        frames_out, deadline misses and latency."""
        track: OutputTrack = OutputTrack(
            self._processed, lambda: self.frame_interval, self._input_waiting,
            on_sent=lambda work, now, missed: self._record_sent(track, work, now, missed),
            own_frame=(lambda frame, work: frames.another_frame(frame, work.output)) if own_frames else None,
        )
        self._outputs.append(track)
        return track

    def reader(self) -> BroadcastReader[tuple[VideoFrame, Work]]:
        """Each processed frame (with its Work) once, for sinks that want every one (a file), not
        a paced track; a slow reader skips frames and counts them (`skipped`)."""
        return self._processed.reader()

    @property
    def idle(self) -> bool:
        """No frame waits for or is in the pipeline."""
        return not self._busy and not self._inbox.pending

    def unsubscribe(self, track: OutputTrack) -> None:
        """Stop `track` and forget it (a viewer left)."""
        track.stop()
        if track in self._outputs:
            self._outputs.remove(track)

    @property
    def readers(self) -> int:
        return len(self._outputs)

    @property
    def frame_interval(self) -> float:
        rate = self._in_rate.rate(time.perf_counter())
        return 1.0 / rate if rate > 1.0 else 1.0 / 30.0

    def _input_waiting(self) -> bool:
        return self._busy or self._inbox.pending

    # ---- tasks ------------------------------------------------------------------------------
    async def _ingest(self, track: MediaStreamTrack) -> None:
        """Take every decoded frame as soon as it exists; only the newest waits for the worker."""
        try:
            while True:
                frame = await track.recv()
                now = self.last_input = time.perf_counter()
                if frame.pict_type == B_FRAME and not self.warning:
                    self._warn_b_frames()
                if self.paused:  # nobody would see it: not worth processing
                    self.frames_paused += 1
                    continue
                self._in_rate.tick(now)
                self.frames_in += 1
                self._metrics.frames_in.inc()
                if self._inbox.put((frame, now)):
                    self._metrics.frames_dropped.inc()
        except MediaStreamError:
            log.info("stream %s: the input track ended", self.name)
            self._on_input_ended()

    def _warn_b_frames(self) -> None:
        # Decoded fine, but each B-frame holds the stream back by the frames it refers ahead to.
        self.warning = ("the video has B-frames, which add latency and which WebRTC does not expect: "
                        "turn them off in the encoder (in OBS: x264 options bframes=0, or a baseline profile)")
        log.warning("stream %s: %s", self.name, self.warning)
        self._on_error("video", self.warning)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame, t_recv = await self._inbox.take()
            self._busy = True
            params = self.params
            work = Work(image=np.empty(0, np.uint8), params=params, quality=self.budget.quality, t_recv=t_recv)
            try:
                out = await loop.run_in_executor(self._hub.executor, self._process, frame, work)
            except Exception:
                # The stream must not freeze: send the input on, and make the failure visible.
                log.exception("stream %s: pipeline failed; passing the frame through", self.name)
                self._metrics.pipeline_errors.inc()
                out = frame
            finally:
                self._busy = False
            self._processed.publish((out, work))
            await asyncio.sleep(0)  # the output tracks take the frame before the bookkeeping runs
            self.budget.set_fps(self._in_rate.rate(time.perf_counter()) or 30.0)
            self.budget.observe(sum(work.timings.values()))
            for stage, seconds in work.timings.items():
                self._metrics.stage_seconds.labels(stage).observe(seconds)
                previous = self._stage_ms.get(stage, seconds * 1000)
                self._stage_ms[stage] = STAGE_SMOOTHING * previous + (1 - STAGE_SMOOTHING) * seconds * 1000
            for field, message in self._pipeline.notices():  # errors of work done off the frame path
                self._on_error(field, message)

    def stage(self, name: str):
        """The pipeline's stage called `name` (None if it has none)."""
        return self._pipeline.stage(name)

    def _process(self, frame: VideoFrame, work: Work) -> VideoFrame:
        return process_frame(self._pipeline, frame, work)

    def _record_sent(self, track: OutputTrack, work: Work | None, now: float, missed: bool) -> None:
        """Each frame the oldest output track hands to its encoder (`work` None: a repeat)."""
        if not self._outputs or track is not self._outputs[0]:
            return
        self.frames_out += 1
        self._out_rate.tick(now)
        self._metrics.frames_out.inc()
        if missed:
            self.deadline_misses += 1
            self._metrics.deadline_misses.inc()
        if work is not None:
            self._metrics.frame_latency.observe(now - work.t_recv)
            self._latency_ms.append((now - work.t_recv) * 1000)

    # ---- control ----------------------------------------------------------------------------
    def update_params(self, patch: Any) -> Params:
        """Apply a partial update; raises ParamsError (nothing changes) when it is invalid."""
        params = self.params.updated(patch)
        self._hub.check_params(params)
        self._pipeline.check(params)
        self.params = params
        return params

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        latency = np.fromiter(self._latency_ms, dtype=np.float64)
        return {
            "fps_in": round(self._in_rate.rate(now), 1),
            "fps_out": round(self._out_rate.rate(now), 1),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self._inbox.dropped,
            "frames_paused": self.frames_paused,
            "deadline_misses": self.deadline_misses,
            "stage_ms": {k: round(v, 2) for k, v in self._stage_ms.items()},
            "engine_latency_ms_p50": round(float(np.median(latency)), 2) if latency.size else None,
            "budget_ms": round(self.budget.budget_s * 1000, 1),
            "quality": self.budget.quality.name,
            "effect": self.params.effect,
            "warning": self.warning,
            **self._pipeline.stats(),
            "runtimes": self._hub.runtimes(),
            # The model's runs and the frames that reused its last mask (segment_skip, the ladder).
            "model_calls": getattr(self._pipeline, "model_calls", lambda: None)(),
        }

    # ---- teardown ---------------------------------------------------------------------------
    async def close(self) -> None:
        """Idempotent: stop the tasks and the output tracks, and let go of every frame."""
        if self.closed:
            return
        self.closed = True
        await self.tasks.close()
        for track in self._outputs:
            track.stop()
        self._inbox.take_nowait()
        self._processed.clear()
        self._pipeline.close()


def process_frame(pipeline, frame: VideoFrame, work: Work) -> VideoFrame:
    """Executor thread: view the frame as I420 planes, run the pipeline, wrap the result as a
    VideoFrame (the frame itself when the pipeline passed its input through)."""
    start = time.perf_counter()
    frame = frames.as_i420(frame)
    source = work.image = frames.plane_views(frame)
    work.timings["convert_in"] = time.perf_counter() - start
    pipeline.process(work)
    start = time.perf_counter()
    # The frame itself only when the output is its own planes (a stage such as the auto-frame
    # crop may have replaced work.image, and the output may be that new picture).
    out = frame if work.output is source else frames.to_video_frame(work.output)
    work.timings["convert_out"] = work.timings.get("convert_out", 0.0) + time.perf_counter() - start
    return out
