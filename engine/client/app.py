"""`camfx camera`: a camera in, effects applied here or on a camfx server, the picture out to a
virtual camera, files or a window; live control over a local HTTP API and page.

    source --> processor (local Stream, or a remote camfx serve) --> each processed frame --> sinks

The processor's output is read frame by frame (a file gets every one that was made); each sink
has a thread of its own behind a one-place slot, so none can hold the camera or another. When
nobody has the virtual camera open (where the platform can tell), processing pauses.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tasks import TaskSet
from .sinks import SinkError, SinkRunner, VirtualCameraSink
from .sources import Source

log = logging.getLogger("camfx.camera")

READERS_EVERY_S = 1.0
RATE_WINDOW_S = 1.0  # no output rate is shown until frames have come out for this long
HISTOGRAM_STEP_MS, HISTOGRAM_MAX_MS = 0.1, 2000.0  # the run's latency summary: fixed size, any length of run


class LatencyHistogram:
    """Every frame's latency of a whole run in fixed memory (0.1 ms steps up to 2 s; longer ones
    counted in the last bin), for the run's p50 and p95 at exit."""

    def __init__(self):
        self._bins = np.zeros(int(HISTOGRAM_MAX_MS / HISTOGRAM_STEP_MS) + 1, dtype=np.int64)
        self.count = 0

    def add(self, ms: float) -> None:
        self._bins[min(int(ms / HISTOGRAM_STEP_MS), len(self._bins) - 1)] += 1
        self.count += 1

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        index = int(np.searchsorted(np.cumsum(self._bins), q / 100 * self.count))
        return (index + 0.5) * HISTOGRAM_STEP_MS


@dataclass
class CameraRun:
    """What one run did, for the exit summary, --stats and GET /stats."""

    frames_out: int = 0
    skipped: int = 0  # processed frames a slower output loop never saw
    started: float = field(default_factory=time.perf_counter)
    first_out: float | None = None
    last_out: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    out_times: deque = field(default_factory=lambda: deque(maxlen=120))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def fps_out(self) -> float | None:
        """Frames out per second over the last few seconds; None until a whole window is measured
        (two frames 20 ms apart are not "50 fps")."""
        times = self.out_times
        if self.first_out is None or times[-1] - self.first_out < RATE_WINDOW_S:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def out_at(self, now: float, latency_ms: float | None) -> None:
        self.frames_out += 1
        self.out_times.append(now)
        self.first_out = self.first_out or now
        self.last_out = now
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)
            self.latency.add(latency_ms)


class CameraApp:
    def __init__(self, source: Source, processor, runners: list[SinkRunner], print_stats: bool = False):
        self.source, self.processor, self.runners = source, processor, runners
        self.print_stats = print_stats
        self.run = CameraRun()
        self.stop_event = asyncio.Event()
        self.preview: Any = None  # the newest frame, for the control page's preview
        self.paused = False

    def stats(self) -> dict[str, Any]:
        latency = np.fromiter(self.run.latencies_ms, dtype=np.float64)
        return {
            **self.processor.stats(),
            "source": self.source.description,
            "fps_out": None if (fps := self.run.fps_out()) is None else round(fps, 1),
            "frames_out": self.run.frames_out,
            "frames_skipped": self.run.skipped,
            "latency_ms_p50": round(float(np.median(latency)), 2) if latency.size else None,
            "latency_ms_p95": round(float(np.percentile(latency, 95)), 2) if latency.size else None,
            "paused": self.paused,
            "outputs": {r.sink.name: {"written": r.written, "dropped": r.dropped,
                                      "error": str(r.error) if r.error else None} for r in self.runners},
        }

    async def _pump(self) -> None:
        """Every processed frame to every sink, as it comes."""
        reader = self.processor.reader()
        while True:
            item = await reader.take()
            if item is None:
                continue
            frame, info = item
            now = time.perf_counter()
            read_at = getattr(info, "t_recv", None) or getattr(info, "sent", None)  # a Work, or the client's Sent
            self.run.out_at(now, (now - read_at) * 1000 if read_at else None)
            self.preview = frame
            for runner in self.runners:
                runner.offer(frame, read_at)
            self.run.skipped = reader.skipped

    async def _watch(self) -> None:
        """Once a second: the end of a file, sinks that failed, whether anyone watches, --stats."""
        last_check = 0.0
        while True:
            await asyncio.sleep(0.1)
            failed = next((r.error for r in self.runners if r.error is not None), None)
            if failed is not None:
                raise failed
            if self.processor.ended and self.processor.idle:
                await asyncio.sleep(0.3)  # the last frame's way to the sinks
                if self.processor.idle:
                    return
            now = time.perf_counter()
            if now - last_check >= READERS_EVERY_S:
                last_check = now
                self._pause_if_unwatched()
                if self.print_stats:
                    print(self.stats_line(), flush=True)

    def _pause_if_unwatched(self) -> None:
        virtual = [r.sink for r in self.runners if isinstance(r.sink, VirtualCameraSink)]
        if not virtual or len(virtual) != len(self.runners):
            return  # a file or a window wants every frame
        readers = [sink.readers() for sink in virtual]
        if None in readers:
            return  # this platform cannot tell who watches
        paused = sum(readers) == 0
        if paused != self.paused:
            log.info("virtual camera: %s", "nobody watches; processing paused" if paused else "watched; processing")
            self.paused = paused
            self.processor.pause(paused)

    def stats_line(self) -> str:
        s = self.stats()
        latency = f"{s['latency_ms_p50']:.1f} ms" if s["latency_ms_p50"] is not None else "-"
        state = f" [{s['state']}]" if s.get("state") else ""
        # The rates only once a whole window is measured: the first frames' spacing says nothing.
        rates = ("camera - fps -> out - fps" if s["fps_out"] is None
                 else f"camera {s['fps_in']:.1f} fps -> out {s['fps_out']:.1f} fps")
        return (f"{rates}, latency p50 {latency}, dropped {s['frames_dropped']}"
                f"{', paused' if s['paused'] else ''}{state}")

    def summary(self) -> list[str]:
        """What the run did, for the terminal at exit: frames in / out / dropped, fps, latency,
        and each output's count."""
        run, s = self.run, self.processor.stats()
        dropped = s.get("frames_dropped", 0) + run.skipped + sum(r.dropped for r in self.runners)
        span = (run.last_out - run.first_out) if run.first_out is not None else 0.0
        fps = f"{(run.frames_out - 1) / span:.1f} fps" if span > 0 else "- fps"
        p50, p95 = run.latency.percentile(50), run.latency.percentile(95)
        latency = f"latency p50 {p50:.1f} ms, p95 {p95:.1f} ms" if p50 is not None else "latency -"
        frames_in = s.get("frames_in")
        lines = [f"{frames_in if frames_in is not None else '?'} frames in, {run.frames_out} out, {dropped} dropped; "
                 f"{fps} over {span:.1f} s; {latency}"]
        for runner in self.runners:
            done = {"window": "showed {} frames in the window", "virtual camera": "sent {} frames to the virtual "
                    "camera", "null": "let {} frames go"}.get(runner.sink.name, "wrote {} frames to " + runner.sink.name)
            lines.append(f"{done.format(runner.written)} ({runner.dropped} dropped)")
        return lines

    async def run_until_done(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop_event.set)
            except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt
                pass
        tasks = TaskSet("camera")
        tasks.spawn(self._pump())
        watch, stop = tasks.spawn(self._watch()), tasks.spawn(self.stop_event.wait())
        try:
            await self.processor.start(self.source.track)
            done, _ = await asyncio.wait({watch, stop}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()  # a sink's error ends the run, with its message
        finally:
            await tasks.close()
            self.source.close()
            await self.processor.close()
            for runner in self.runners:
                runner.close()
        failed = next((r.error for r in self.runners if r.error is not None), None)
        if failed is not None:
            raise failed
        return 0


__all__ = ["CameraApp", "SinkError"]
