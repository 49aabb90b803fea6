"""A simulated diffusion device: what a UNet / TAESD call costs as a function of batch and
picture size, and a discrete-event run of many streams on it, with the scheduler
(camfx.engine.diffusion.scheduler) or with one first-in-first-out executor (each stream's worker
submitting its newest frame and waiting for it: how camfx served diffusion before the scheduler).

Cost of one call of a network at batch B and picture area A (in 512x512 units):

    t = t_512 * (fixed + (1 - fixed) * B * A)

`fixed` is the share of a batch-1 512x512 call that does not grow with the batch (kernel
launches, weights read once per call): with 0.8 a batch of 4 costs 1.6x a batch of 1, as
measured batch scaling of SD-class UNets at small batches roughly is on current GPUs;
`bench/gpu_check.sh` measures the real curve on a lent GPU (`camfx bench diffusion
--networks`). The per-picture times t_512 of the profiles come from published figures:

    rtx4090-tensorrt  sd-turbo, 1 step, 512x512 img2img with TAESD at 93.9 pictures/s on an
                      RTX 4090 with TensorRT (StreamDiffusion's README): 10.65 ms a picture,
                      split UNet 8.0 / encode 1.1 / decode 1.55 ms (TAESD about a quarter).
    rtx3080           the same at 30-40 pictures/s, the rate reported for an RTX 3080 without
                      TensorRT: 28.5 ms, split UNet 22.0 / encode 2.5 / decode 4.0 ms.

No torch: this runs anywhere.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scheduler import REFERENCE_AREA, AdmissionError, Batch, Budget, DiffusionScheduler, Rung, ladder


@dataclass(frozen=True)
class DeviceProfile:
    """Milliseconds per network call at batch 1, 512x512, and the share that does not grow."""

    name: str
    unet_ms: float
    encode_ms: float
    decode_ms: float
    fixed: float = 0.8
    source: str = ""

    def call_s(self, ms: float, elements: int, area: float) -> float:
        return ms / 1000.0 * (self.fixed + (1.0 - self.fixed) * elements * area) if elements else 0.0

    def batch_s(self, rungs: list[Rung]) -> float:
        """One batch: one TAESD encode and decode for every picture, one UNet call per round
        (a stream batch puts its steps in the first round; sequential steps take one each)."""
        areas = [r.size * r.size / REFERENCE_AREA for r in rungs]  # square pictures
        seconds = self.call_s(self.encode_ms, len(rungs), np.mean(areas)) + self.call_s(
            self.decode_ms, len(rungs), np.mean(areas))
        for round_ in range(max(r.unet_calls for r in rungs)):
            elements = [(r.steps if r.stream_batch else 1, a) for r, a in zip(rungs, areas)
                        if (r.stream_batch and round_ == 0) or (not r.stream_batch and round_ < r.steps)]
            count = sum(n for n, _ in elements)
            seconds += self.call_s(self.unet_ms, count, sum(n * a for n, a in elements) / count)
        return seconds

    def picture_s(self, rung: Rung) -> float:
        return self.batch_s([rung])


PROFILES = {
    "rtx3080": DeviceProfile("rtx3080", 22.0, 2.5, 4.0, source="30-40 pictures/s reported, RTX 3080, no TensorRT"),
    "rtx4090-tensorrt": DeviceProfile("rtx4090-tensorrt", 8.0, 1.1, 1.55,
                                      source="93.9 pictures/s, StreamDiffusion README, RTX 4090, TensorRT"),
}


@dataclass
class StreamResult:
    """One stream's outcome over the measured window."""

    admitted: bool
    target_fps: float
    achieved_fps: float = 0.0
    age_ms_p50: float | None = None
    age_ms_p95: float | None = None
    batch_size: float | None = None
    rung: str | None = None
    stale: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunResult:
    policy: str
    streams: list[StreamResult]
    busy_share: float
    batches_per_s: float
    mean_batch_size: float | None
    held: int = field(init=False)  # admitted streams at >= 0.9 of their target

    def __post_init__(self):
        self.held = sum(1 for s in self.streams if s.admitted and s.achieved_fps >= 0.9 * s.target_fps)

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "busy_share": self.busy_share, "batches_per_s": self.batches_per_s,
                "mean_batch_size": self.mean_batch_size, "held": self.held,
                "streams": [s.as_dict() for s in self.streams]}


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _summary(times: list[float], ages: list[float], start: float, end: float) -> tuple[float, float | None, float | None]:
    kept = [a for t, a in zip(times, ages) if start <= t <= end]
    fps = len(kept) / (end - start)
    if not kept:
        return fps, None, None
    ms = np.array(kept) * 1000
    return fps, round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 95)), 1)


class SimulatedDevice:
    """Streams with cameras at `camera_fps` on a scheduler whose batches take the profile's time,
    on a simulated clock: `open` / `close` streams, `run_until` a time."""

    def __init__(self, profile: DeviceProfile, camera_fps: float = 30.0, **knobs):
        self.profile, self.camera_fps = profile, camera_fps
        self.clock = SimClock()
        self.scheduler = DiffusionScheduler(self.clock, **knobs)
        self._frames: list[tuple[float, int, Any]] = []  # (next frame time, stream number, handle)
        self._running: tuple[Batch, float] | None = None
        self.busy: list[tuple[float, float]] = []  # (start, seconds) of every batch
        self.sizes: list[tuple[float, int]] = []  # (start, streams) of every batch
        self.pictures: dict[int, list[tuple[float, float]]] = {}  # stream -> (time, age)
        self.fail: set[int] = set()  # streams whose pictures fail (a broken prompt, say)

    def open(self, budget: Budget, rungs: tuple[Rung, ...], model: str = "sim"):
        """A stream joining now (raises AdmissionError when refused); its first frame comes 7 ms
        per stream number later, so cameras are not in phase."""
        handle = self.scheduler.open(model, rungs, budget)
        heapq.heappush(self._frames, (self.clock.now + 0.0071 * (handle.number % 5), handle.number, handle))
        return handle

    def close(self, handle) -> None:
        handle.close()

    def run_until(self, end: float) -> None:
        while self.clock.now < end:
            now = self.clock.now
            if self._running is not None and now >= self._running[1]:
                batch, finished = self._running
                ok = [e for e in batch.entries if e.stream.number not in self.fail]
                errors = {e.stream.number: "failed" for e in batch.entries if e.stream.number in self.fail}
                self.scheduler.done(batch, {e.stream.number: True for e in ok}, errors, now=finished)
                for e in ok:
                    if e.stream.picture_times and e.stream.picture_times[-1] == finished:
                        self.pictures.setdefault(e.stream.number, []).append((finished, finished - e.t_frame))
                self._running = None
            while self._frames and self._frames[0][0] <= now:
                t, number, handle = heapq.heappop(self._frames)
                if handle.closed:
                    continue
                handle.offer(None, t, (handle.model, handle.rung.size))
                heapq.heappush(self._frames, (t + 1.0 / self.camera_fps, number, handle))
            if self._running is None:
                batch = self.scheduler.next_batch(now)
                if batch is not None:
                    seconds = self.profile.batch_s([e.rung for e in batch.entries])
                    self._running = (batch, now + seconds)
                    self.busy.append((now, seconds))
                    self.sizes.append((now, len(batch.entries)))
            nxt = [end]
            if self._frames:
                nxt.append(self._frames[0][0])
            wait = self.scheduler.wait_s(now)
            nxt.append(self._running[1] if self._running is not None else now + max(1e-4, wait))
            self.clock.now = min(nxt)

    def result(self, handle, start: float, end: float) -> StreamResult:
        """A stream's rate, picture age and rung over [start, end]."""
        got = [(t, a) for t, a in self.pictures.get(handle.number, []) if start <= t <= end]
        achieved, p50, p95 = _summary([t for t, _ in got], [a for _, a in got], start, end)
        st = handle.stats(end)
        return StreamResult(True, handle.fps, round(achieved, 2), p50, p95, st["batch_size"], st["rung"],
                            handle.stale)

    def device(self, start: float, end: float) -> tuple[float, float, float | None]:
        """(busy share, batches per second, mean batch size) over [start, end]."""
        busy = sum(min(s, end - t) for t, s in self.busy if start <= t < end)
        sizes = [n for t, n in self.sizes if start <= t < end]
        return (round(busy / (end - start), 3), round(len(sizes) / (end - start), 2),
                round(float(np.mean(sizes)), 2) if sizes else None)


def run_scheduler(profile: DeviceProfile, sessions: int, *, fps: float = 30.0, camera_fps: float = 30.0,
                  max_age_s: float = 0.2, size: int = 512, steps: int = 1, join_every_s: float = 2.0,
                  measure_s: float = 10.0, **knobs) -> RunResult:
    """`sessions` streams join `join_every_s` apart (each asking admission), then run for
    `measure_s` more seconds, which are measured."""
    sim = SimulatedDevice(profile, camera_fps, **knobs)
    budget, rungs = Budget(fps, max_age_s), ladder(size, steps, False)
    handles = []
    for i in range(sessions):
        sim.run_until(i * join_every_s)
        try:
            handles.append(sim.open(budget, rungs))
        except AdmissionError:
            handles.append(None)
    start = sessions * join_every_s
    end = start + measure_s
    sim.run_until(end)
    results = [sim.result(h, start, end) if h is not None else StreamResult(False, fps) for h in handles]
    return RunResult("scheduler", results, *sim.device(start, end))


def run_fifo(profile: DeviceProfile, sessions: int, *, fps: float = 30.0, camera_fps: float = 30.0,
             max_age_s: float = 0.2, size: int = 512, steps: int = 1, join_every_s: float = 2.0,
             measure_s: float = 10.0) -> RunResult:
    """One executor thread, first in first out: each stream's worker submits its newest frame
    when its last one is done, at full quality, batch 1, with no admission and no age limit."""
    rung = ladder(size, steps, False)[0]
    cost = profile.picture_s(rung)
    joins = [i * join_every_s for i in range(sessions)]
    end = joins[-1] + join_every_s + measure_s
    start = end - measure_s
    queue: list[tuple[int, float]] = []  # (stream, frame time), in submission order
    pending: list[float | None] = [None] * sessions
    waiting = [False] * sessions  # a job of the stream's is queued or running
    times: list[list[float]] = [[] for _ in range(sessions)]
    ages: list[list[float]] = [[] for _ in range(sessions)]
    frames = [(j + 0.0071 * i, i) for i, j in enumerate(joins)]
    heapq.heapify(frames)
    now, busy, device_free, current = 0.0, 0.0, 0.0, None
    done_count = 0
    while now < end:
        if current is not None and now >= device_free:
            i, t_frame = current
            times[i].append(device_free)
            ages[i].append(device_free - t_frame)
            waiting[i], current = False, None
            done_count += device_free >= start
        while frames and frames[0][0] <= now:
            t, i = heapq.heappop(frames)
            pending[i] = t
            heapq.heappush(frames, (t + 1.0 / camera_fps, i))
        for i in range(sessions):
            if pending[i] is not None and not waiting[i]:
                queue.append((i, pending[i]))
                pending[i], waiting[i] = None, True
        if current is None and queue:
            current = queue.pop(0)
            device_free = now + cost
            if now >= start:
                busy += min(cost, end - now)
        now = min([end] + ([frames[0][0]] if frames else []) + ([device_free] if current is not None else []))
    results = []
    for i in range(sessions):
        achieved, p50, p95 = _summary(times[i], ages[i], start, end)
        stale = sum(1 for t, a in zip(times[i], ages[i]) if start <= t and a > max_age_s)
        results.append(StreamResult(True, fps, round(achieved, 2), p50, p95, 1.0, rung.name, stale))
    return RunResult("fifo", results, round(busy / measure_s, 3), round(done_count / measure_s, 2), 1.0)
