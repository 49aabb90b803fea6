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


@dataclass
class CameraRun:
    """What one run did, for the exit line, --stats and GET /stats."""

    frames_out: int = 0
    skipped: int = 0  # processed frames a slower output loop never saw
    started: float = field(default_factory=time.perf_counter)
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    out_times: deque = field(default_factory=lambda: deque(maxlen=120))

    def fps_out(self) -> float:
        times = self.out_times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


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
            "fps_out": round(self.run.fps_out(), 1),
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
            if read_at:
                self.run.latencies_ms.append((now - read_at) * 1000)
            self.run.frames_out += 1
            self.run.out_times.append(now)
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
        return (f"camera {s['fps_in']:.1f} fps -> out {s['fps_out']:.1f} fps, latency p50 {latency}, "
                f"dropped {s['frames_dropped']}{', paused' if s['paused'] else ''}{state}")

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
