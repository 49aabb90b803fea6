"""One peer connection: its tracks, control channel, parameters, tasks and clean teardown.

    receiver --ingest--> FrameSlot --worker (executor)--> FrameSlot --> ProcessedTrack --> sender

Ingest drains aiortc's unbounded receive queue as fast as frames come; each slot keeps only
the newest item, so a slow pipeline drops frames (counted) instead of adding latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from concurrent.futures import Executor
from typing import Any, Callable

import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from . import frames, safe_json
from .budget import BudgetController
from .frame_slot import FrameSlot
from .metrics import Metrics
from .params import Params, ParamsError, field_error
from .pipeline import Pipeline, Work
from .rate import RateMeter
from .stylize import Generator
from .tracks import ProcessedTrack

log = logging.getLogger("camfx.session")

STATS_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 6.0  # from the answer to "connected"; ICE and DTLS take well under a second on loopback
MEDIA_TIMEOUT_S = 5.0  # connected, but no frame from the peer for this long: it is gone
WATCH_INTERVAL_S = 0.5
MAX_MESSAGE_BYTES = 16 * 1024  # a control message is a few hundred bytes


class Session:
    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        params: Params,
        pipeline: Pipeline,
        executor: Executor,
        metrics: Metrics,
        on_closed: Callable[["Session"], None],
        check_params: Callable[[Params], None] = lambda params: None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        media_timeout: float = MEDIA_TIMEOUT_S,
        make_generator: Callable[[Callable[[str, str], None]], Generator] | None = None,
        runtimes: Callable[[], dict[str, Any]] = dict,
    ):
        self.id = session_id
        self.pc = pc
        self.params = params
        self.pipeline = pipeline
        self.budget = BudgetController()
        self.output = ProcessedTrack(self)
        self.inbox: FrameSlot[tuple[VideoFrame, float]] = FrameSlot()
        self.outbox: FrameSlot[tuple[VideoFrame, Work]] = FrameSlot()
        self.closed = asyncio.Event()
        self.busy = False  # the worker holds a frame
        self._executor = executor
        self._metrics = metrics
        self._on_closed = on_closed
        self._check_params = check_params
        self._connect_timeout = connect_timeout
        self._media_timeout = media_timeout
        self._last_input = 0.0  # when the newest frame from the peer came
        self._tasks: set[asyncio.Task] = set()
        self._channel: RTCDataChannel | None = None
        self._in_rate, self._out_rate = RateMeter(), RateMeter()
        self._stage_ms: dict[str, float] = {}
        self._latency_ms: deque[float] = deque(maxlen=120)
        self.frames_in = self.frames_out = self.deadline_misses = 0
        self.created = time.perf_counter()
        # The diffusion effect's generator, made when the effect is first used.
        self._make_generator = make_generator
        self._runtimes = runtimes  # which runtime runs each model, and what fell back
        self.generator: Generator | None = None

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        self._spawn(self._close_when_peer_is_gone())

    # ---- tasks ---------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video":
            return
        self._spawn(self._ingest(track))
        self._spawn(self._work())
        self._spawn(self._report_stats())

    async def _ingest(self, track: MediaStreamTrack) -> None:
        """Take every decoded frame as soon as it exists; only the newest waits for the worker."""
        try:
            while True:
                frame = await track.recv()
                now = self._last_input = time.perf_counter()
                self._in_rate.tick(now)
                self.frames_in += 1
                self._metrics.frames_in.inc()
                if self.inbox.put((frame, now)):
                    self._metrics.frames_dropped.inc()
        except MediaStreamError:
            log.info("session %s: remote track ended", self.id)
            self._spawn(self.close())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame, t_recv = await self.inbox.take()
            self.busy = True
            params = self.params
            work = Work(image=np.empty(0, np.uint8), params=params, quality=self.budget.quality, t_recv=t_recv)
            if params.effect == "diffusion":
                work.stylized = self._generator().latest
            try:
                out = await loop.run_in_executor(self._executor, self._process, frame, work)
            except Exception:
                # The stream must not freeze: send the input on, and make the failure visible.
                log.exception("session %s: pipeline failed; passing the frame through", self.id)
                self._metrics.pipeline_errors.inc()
                out = frame
            finally:
                self.busy = False
            self.outbox.put((out, work))
            await asyncio.sleep(0)  # the output track takes the frame before the bookkeeping runs
            self.budget.set_fps(self._in_rate.rate(time.perf_counter()) or 30.0)
            self.budget.observe(sum(work.timings.values()))
            for stage, seconds in work.timings.items():
                self._metrics.stage_seconds.labels(stage).observe(seconds)
                previous = self._stage_ms.get(stage, seconds * 1000)
                self._stage_ms[stage] = 0.9 * previous + 0.1 * seconds * 1000
            if params.effect == "diffusion" and work.timings:  # the pipeline ran on this frame
                self._generator().offer(work.image, work.alpha, params)

    def _generator(self) -> Generator:
        if self.generator is None:
            if self._make_generator is None:
                raise RuntimeError("this server has no diffusion models")
            self.generator = self._make_generator(self._on_generator_error)
            self._spawn(self.generator.run())
        return self.generator

    def _on_generator_error(self, field: str, message: str) -> None:
        self._send({"type": "error", "errors": [field_error(field, message)]})

    def _process(self, frame: VideoFrame, work: Work) -> VideoFrame:
        """Executor thread: view the frame as I420 planes, run the pipeline, wrap the result as a
        VideoFrame (the frame itself when the pipeline passed its input through)."""
        start = time.perf_counter()
        frame = frames.as_i420(frame)
        work.image = frames.plane_views(frame)
        work.timings["convert_in"] = time.perf_counter() - start
        self.pipeline.process(work)
        start = time.perf_counter()
        out = frame if work.output is work.image else frames.to_video_frame(work.output)
        work.timings["convert_out"] = time.perf_counter() - start
        return out

    def record_sent(self, work: Work | None, now: float, missed: bool) -> None:
        """Called by the output track for each frame it hands to the encoder (`work` is None
        for a repeat of the last frame)."""
        self.frames_out += 1
        self._out_rate.tick(now)
        self._metrics.frames_out.inc()
        if missed:
            self.deadline_misses += 1
            self._metrics.deadline_misses.inc()
        if work is not None:
            self._metrics.frame_latency.observe(now - work.t_recv)
            self._latency_ms.append((now - work.t_recv) * 1000)

    @property
    def frame_interval(self) -> float:
        rate = self._in_rate.rate(time.perf_counter())
        return 1.0 / rate if rate > 1.0 else 1.0 / 30.0

    # ---- control ---------------------------------------------------------------------------
    def update_params(self, patch: Any) -> Params:
        """Apply a partial update; raises ParamsError (nothing changes) when it is invalid."""
        params = self.params.updated(patch)
        self._check_params(params)
        if self.generator is not None:
            self.generator.check(params)
        self.params = params
        return params

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "control":
            return
        self._channel = channel

        @channel.on("message")
        def on_message(message: Any) -> None:
            # Nothing may escape: aiortc's event emitter would end the whole session with it.
            try:
                reply = self._control(message)
            except Exception:
                log.exception("session %s: control message failed", self.id)
                reply = {"type": "error", "errors": [field_error("", "the server could not apply this message")]}
            self._send(reply)

    def _control(self, message: Any) -> dict:
        """One message on the control channel: a params patch in, the answer out."""
        if not isinstance(message, (str, bytes)):
            return {"type": "error", "errors": [field_error("", "expected a JSON object as text")]}
        try:
            patch = safe_json.loads(message, MAX_MESSAGE_BYTES)
            params = self.update_params(patch)
        except safe_json.JSONInputError as exc:
            return {"type": "error", "errors": [field_error("", str(exc))]}
        except ParamsError as exc:
            return {"type": "error", "errors": exc.errors}
        return {"type": "params", "params": params.model_dump()}

    def _send(self, message: dict) -> None:
        if self._channel is not None and self._channel.readyState == "open":
            try:
                self._channel.send(json.dumps(message))
            except Exception:  # the channel closed under us: the session's own teardown follows
                log.debug("session %s: control message not sent", self.id, exc_info=True)

    async def _report_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            self._send({"type": "stats", **self.stats()})

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        latency = np.fromiter(self._latency_ms, dtype=np.float64)
        return {
            "session_id": self.id,
            "fps_in": round(self._in_rate.rate(now), 1),
            "fps_out": round(self._out_rate.rate(now), 1),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_dropped": self.inbox.dropped,
            "deadline_misses": self.deadline_misses,
            "stage_ms": {k: round(v, 2) for k, v in self._stage_ms.items()},
            "engine_latency_ms_p50": round(float(np.median(latency)), 2) if latency.size else None,
            "budget_ms": round(self.budget.budget_s * 1000, 1),
            "quality": self.budget.quality.name,
            "effect": self.params.effect,
            "diffusion": self.generator.stats() if self.generator is not None else None,
            "runtimes": self._runtimes(),
        }

    # ---- teardown ----------------------------------------------------------------------------
    async def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    async def _close_when_peer_is_gone(self) -> None:
        """A peer that never connects, or stops sending, frees its slot within seconds (ICE
        consent would take 30)."""
        opened, connected_at = time.perf_counter(), None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.perf_counter()
            if connected_at is None and self.pc.connectionState != "connected":
                if now - opened > self._connect_timeout:
                    log.info("session %s: the peer did not connect within %g s; closing", self.id, self._connect_timeout)
                    break
                continue
            connected_at = connected_at or now
            silent = now - max(self._last_input, connected_at)
            if silent > self._media_timeout:
                log.info("session %s: no video from the peer for %.0f s; closing", self.id, silent)
                break
        self._spawn(self.close())

    async def close(self) -> None:
        """Idempotent, and it always frees the slot: a failure while tearing down (aiortc raises
        closing a connection it half set up) is logged, never kept."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.output.stop()
            await self.pc.close()
        except Exception:
            log.warning("session %s: teardown failed; the session is freed anyway", self.id, exc_info=True)
        finally:
            self.inbox.take_nowait()
            self.outbox.take_nowait()
            self._on_closed(self)
            log.info("session %s: closed", self.id)
