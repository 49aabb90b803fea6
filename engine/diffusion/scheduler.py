"""One diffusion scheduler per device, shared by every stream that restyles its picture.

Each stream opens a handle (`DiffusionScheduler.open`) and offers its newest frame to it (newest
wins: a frame not taken yet is replaced). The device's loop (camfx.engine.diffusion.device) asks
`next_batch` for work and reports back with `done`; the scheduler decides which streams' frames
go together into one UNet call (one TAESD encode / decode): streams on the same model and
picture size, taken in deadline order. Nothing here runs a network or reads a real clock: the
clock is injected, so the policy is tested and benchmarked on a simulated one.

Budget per stream (`Budget`): a target picture rate and a freshness limit. A stream is due once
per 1/fps; the earliest due goes first and the others due before that batch would end join it
(fair sharing: every stream the same way, by its own deadline). A frame that would be older
than the freshness limit by the time its picture is made is not started, and a picture that
comes out older anyway is not shown (counted as stale).

Quality ladder per stream (`ladder`): full, then stream batch (steps > 1: one UNet call per
picture), then one step, then 3/4 and 1/2 of the picture's long side. Every `window_s` the
scheduler looks at the last window: a stream that got under `floor` of its target while its
camera gave enough frames and the device was busy is starved: the best-quality streams step
down a rung, all of that rung together so that they stay in one batch. Streams step back up when the cost model
(`CostFit`, fitted to the batches the device ran) says the device stays under `up_share` busy
with them one rung up (the lowest rung first); a stream that had to come back down waits
twice as long before its next try. The rate itself is the last thing to give.

Admission (`admit`): a new stream, or a stream asking for a higher rate, is refused when the
cost model says the device cannot hold every stream at its floor even on its lowest rung, or
when a stream on its lowest rung is already starved. The caller answers 503 + Retry-After for
a new session, 422 for a parameter change: never a silent slowdown of everyone. When the
device is over-committed all the same (its speed changed, a cost was misjudged), the newest
streams are the ones held back (`limited`, to half their rate): the older ones keep theirs.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np

REFERENCE_AREA = 512 * 512  # a cost-model work unit: one UNet element at 512x512


@dataclass(frozen=True)
class Rung:
    """What a stream runs at: the picture's long side, UNet steps, stream batch."""

    size: int
    steps: int
    stream_batch: bool

    @property
    def name(self) -> str:
        return f"{self.size}px {self.steps} step{'s' if self.steps > 1 else ''}" + (
            " stream-batch" if self.stream_batch and self.steps > 1 else "")

    @property
    def unet_calls(self) -> int:
        """UNet rounds per picture (a stream batch does its steps in one call)."""
        return 1 if self.stream_batch else self.steps

    def work(self, aspect: float = 1.0) -> float:
        """UNet elements x picture area per picture, in units of one 512x512 element."""
        return self.steps * self.size * self.size * aspect / REFERENCE_AREA


def ladder(size: int, steps: int, stream_batch: bool) -> tuple[Rung, ...]:
    """The rungs a stream with these settings steps down through, best first."""
    rungs = [Rung(size, steps, stream_batch)]
    if steps > 1 and not stream_batch:
        rungs.append(Rung(size, steps, True))
    if steps > 1:
        rungs.append(Rung(size, 1, False))
    for fraction in (0.75, 0.5):
        smaller = max(128, int(size * fraction) // 64 * 64)
        if smaller < rungs[-1].size:
            rungs.append(Rung(smaller, 1, False))
    return tuple(rungs)


AUTO_MAX_FPS = 30.0  # what "auto" asks for at most: a camera's rate
AUTO_MIN_AGE_S = 0.25


@dataclass(frozen=True)
class Budget:
    """A stream's target picture rate and freshness limit (a picture from a frame older than
    `max_age_s` is not shown). fps None: auto, what the device holds this stream at when alone
    on its best rung (at most AUTO_MAX_FPS). max_age_s None: auto, two pictures' time at the
    target rate and at least AUTO_MIN_AGE_S."""

    fps: float | None
    max_age_s: float | None = None

    def __post_init__(self):
        if (self.fps is not None and not self.fps > 0) or (self.max_age_s is not None and not self.max_age_s > 0):
            raise ValueError(f"a budget needs fps > 0 and max_age_s > 0 (or None: auto), got {self}")


class AdmissionError(Exception):
    """The device cannot hold another stream (or this rate) without slowing the others."""

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class Entry:
    """One stream's frame in a batch, and the rung it runs at."""

    stream: "StreamHandle"
    payload: Any
    t_frame: float
    rung: Rung


@dataclass
class Batch:
    key: Hashable
    entries: list[Entry]
    started: float

    @property
    def rounds(self) -> int:
        return max(e.rung.unet_calls for e in self.entries)

    @property
    def work(self) -> float:
        return sum(e.rung.work() for e in self.entries)


class CostFit:
    """Seconds per batch as a * UNet rounds + b * work units, least squares over the recent
    batches (a: what a call costs whatever its size; b: per element and area). Until the device
    has run batches different enough to tell the two apart, `prior_fixed` of the time is taken
    as a's."""

    def __init__(self, history: int = 64, prior_fixed: float = 0.5):
        self._rows: deque[tuple[float, float, float]] = deque(maxlen=history)
        self.prior_fixed = prior_fixed
        self.a = self.b = 0.0

    @property
    def known(self) -> bool:
        return bool(self._rows)

    def add(self, rounds: int, work: float, seconds: float) -> None:
        self._rows.append((rounds, work, seconds))
        x = np.array([(r, w) for r, w, _ in self._rows], dtype=np.float64)
        y = np.array([s for _, _, s in self._rows], dtype=np.float64)
        if np.linalg.matrix_rank(x, tol=1e-6 * float(np.abs(x).max())) == 2:
            (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
            if a >= 0 and b >= 0:
                self.a, self.b = float(a), float(b)
                return
        total = float(np.sum(y))
        self.a = self.prior_fixed * total / max(float(np.sum(x[:, 0])), 1e-9)
        self.b = (1.0 - self.prior_fixed) * total / max(float(np.sum(x[:, 1])), 1e-9)

    def seconds(self, rounds: int, work: float) -> float:
        return self.a * rounds + self.b * work


class StreamHandle:
    """A stream's place in the scheduler: offer frames, read the newest picture, see stats."""

    def __init__(self, scheduler: "DiffusionScheduler", number: int, key_model: str, rungs: tuple[Rung, ...],
                 budget: Budget, now: float):
        self._scheduler = scheduler
        self.number = number  # join order: lower is older
        self.model = key_model
        self.rungs, self.level, self.budget = rungs, 0, budget
        self.latest: Any = None  # the newest picture shown
        self.error: str | None = None
        self.limited = False  # held back: the device cannot hold every stream
        self.closed = False
        self._pending: tuple[Any, float, Hashable] | None = None  # (payload, frame time, batch key)
        self._due = now
        self._hold_s, self._hold_until, self._last_up = 0.0, 0.0, -math.inf
        # Counts over the current control window, and recent history for stats.
        self.offered = self.served = self.pictures = self.stale = 0
        self._window = [0, 0]  # offered, served
        self._last_window: tuple[int, int] = (0, 0)
        self.picture_times: deque[float] = deque(maxlen=300)
        self.ages: deque[float] = deque(maxlen=200)
        self.batch_sizes: deque[int] = deque(maxlen=200)

    @property
    def rung(self) -> Rung:
        return self.rungs[self.level]

    @property
    def fps(self) -> float:
        """The target rate in force (auto resolved by the scheduler's cost model)."""
        if self.budget.fps is not None:
            return self.budget.fps
        return self._scheduler.auto_fps(self.rungs[0])

    @property
    def max_age_s(self) -> float:
        """The freshness limit in force (auto resolved from the target rate)."""
        if self.budget.max_age_s is not None:
            return self.budget.max_age_s
        return max(AUTO_MIN_AGE_S, 2.0 / self.fps)

    def offer(self, payload: Any, t_frame: float, key: Hashable) -> None:
        """The newest frame (replacing any not taken yet); `key`: streams with equal keys (model
        and picture size) may share a batch."""
        with self._scheduler._cond:
            if self.closed:
                return
            self._pending = (payload, t_frame, key)
            self.offered += 1
            self._window[0] += 1
            self._scheduler._cond.notify()

    def update(self, rungs: tuple[Rung, ...], budget: Budget, model: str) -> None:
        """New settings (from the stream's parameters); the ladder starts again at the top."""
        with self._scheduler._cond:
            if rungs != self.rungs or model != self.model:
                self.rungs, self.level, self.model = rungs, 0, model
            self.budget = budget
            self.error = None

    def close(self) -> None:
        self._scheduler._close(self)

    def stats(self, now: float | None = None) -> dict[str, Any]:
        now = self._scheduler.clock() if now is None else now
        with self._scheduler._cond:
            recent = [t for t in self.picture_times if now - t <= 5.0]
            ages = np.array(self.ages, dtype=np.float64) * 1000
            sizes = list(self.batch_sizes)
        return {
            "target_fps": round(self.fps, 2),
            "target": "auto" if self.budget.fps is None else "set",
            "achieved_fps": round((len(recent) - 1) / max(recent[-1] - recent[0], 1e-6), 2) if len(recent) > 1 else 0.0,
            "age_ms_p50": round(float(np.percentile(ages, 50)), 1) if ages.size else None,
            "age_ms_p95": round(float(np.percentile(ages, 95)), 1) if ages.size else None,
            "max_age_ms": round(self.max_age_s * 1000),
            "batch_size": round(float(np.mean(sizes)), 2) if sizes else None,
            "rung": self.rung.name,
            "rung_level": self.level,
            "rungs": len(self.rungs),
            "limited": self.limited,
            "pictures": self.pictures,
            "stale": self.stale,
        }


class DiffusionScheduler:
    """The policy of one device's diffusion work; see the module docstring. Thread-safe: streams
    offer from any thread, the device loop takes batches on its own.

    clock: seconds (time.monotonic by default; a simulated clock in tests and the bench).
    max_batch: most streams in one batch. window_s: how often the ladder is reconsidered.
    floor: the share of its target a stream must get. up_share: the busy share the device may
    reach when a stream steps up. admit_share: the busy share admission plans for.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, max_batch: int = 8,
                 window_s: float = 1.0, floor: float = 0.9, up_share: float = 0.9, admit_share: float = 0.9):
        self.clock = clock
        self.max_batch, self.window_s, self.floor = max_batch, window_s, floor
        self.up_share, self.admit_share = up_share, admit_share
        self.cost = CostFit()
        self._cond = threading.Condition()
        self._streams: list[StreamHandle] = []
        self._numbers = itertools.count()
        self._window_start = clock()
        self._window_busy = 0.0
        self.busy_share = 0.0  # of the last window
        self._batches: deque[tuple[float, float, int]] = deque(maxlen=1000)  # (end, seconds, size)
        self.batches_run = 0

    # -- streams -------------------------------------------------------------------------------

    def open(self, model: str, rungs: tuple[Rung, ...], budget: Budget) -> StreamHandle:
        """A new stream's handle; raises AdmissionError when the device cannot hold it too."""
        with self._cond:
            self.admit(budget, rungs)
            handle = StreamHandle(self, next(self._numbers), model, rungs, budget, self.clock())
            self._streams.append(handle)
            return handle

    def admit(self, budget: Budget, rungs: tuple[Rung, ...], stream: StreamHandle | None = None) -> None:
        """Raise AdmissionError unless every stream (with `stream` at `budget`, or a new one) can
        be held at its floor on its lowest rung."""
        with self._cond:
            others = [s for s in self._streams if s is not stream]
            starved = [s for s in others if s.level == len(s.rungs) - 1 and self._starved(s)]
            if starved:
                raise AdmissionError(
                    f"the diffusion device is full: {len(starved)} of its {len(others)} streams already get less "
                    f"than {self.floor:.0%} of their rate at their lowest quality; try again later or lower "
                    f"diffusion_fps")
            if not self.cost.known or not others:
                return  # alone, a stream gets the device whatever its rate
            fps = self._fps(budget, rungs)
            demand = [(s.fps, s.rungs[-1]) for s in others] + [(fps, rungs[-1])]
            share = self._share(demand)
            if share > self.admit_share:
                raise AdmissionError(
                    f"the diffusion device would be {share:.0%} busy with this stream at {fps:.3g} fps next to its "
                    f"{len(others)} others at their lowest quality (limit {self.admit_share:.0%}); lower "
                    f"diffusion_fps or try again later")

    def auto_fps(self, rung: Rung) -> float:
        """What the device holds a stream on `rung` at alone (up to `up_share` busy)."""
        if not self.cost.known:
            return AUTO_MAX_FPS
        return min(AUTO_MAX_FPS, self.up_share / max(self.cost.seconds(rung.unet_calls, rung.work()), 1e-6))

    def _fps(self, budget: Budget, rungs: tuple[Rung, ...]) -> float:
        return budget.fps if budget.fps is not None else self.auto_fps(rungs[0])

    def _share(self, demand: list[tuple[float, Rung]]) -> float:
        """Busy share for streams (fps, rung): those of one picture size batched together, one
        batch per 1/max(fps) of theirs holding every stream's elements at its own rate."""
        share = 0.0
        for size in {rung.size for _, rung in demand}:
            group = [(fps, rung) for fps, rung in demand if rung.size == size]
            top = max(fps for fps, _ in group)
            rounds = max(r.unet_calls for _, r in group)
            share += top * self.cost.seconds(rounds, sum(r.work() * fps / top for fps, r in group))
        return share

    def _close(self, handle: StreamHandle) -> None:
        with self._cond:
            handle.closed = True
            handle._pending = None
            if handle in self._streams:
                self._streams.remove(handle)
                for s in self._streams:  # what starved them is gone: the cost model judges now
                    s._last_window = (0, 0)
            self._cond.notify()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def handles(self) -> list[StreamHandle]:
        with self._cond:
            return list(self._streams)

    # -- the device loop's side ----------------------------------------------------------------

    def next_batch(self, now: float | None = None) -> Batch | None:
        """The batch to run now, or None (then `wait_s` says how long until one may be due)."""
        with self._cond:
            now = self.clock() if now is None else now
            self._control(now)
            estimate = self._estimate(now)
            ready = []
            for s in self._streams:
                if s._pending is None or s._due > now + estimate:
                    continue
                payload, t_frame, key = s._pending
                if now + estimate - t_frame > s.max_age_s:
                    s._pending = None  # too old to be worth a picture: wait for a newer frame
                    s.stale += 1
                    continue
                ready.append(s)
            if not ready:
                return None
            # Earliest deadline first; streams held back (limited) after all the others.
            ready.sort(key=lambda s: (s.limited, s._due, s.number))
            key = ready[0]._pending[2]
            chosen = [s for s in ready if s._pending[2] == key][: self.max_batch]
            entries = []
            for s in chosen:
                payload, t_frame, _ = s._pending
                s._pending = None
                period = (2.0 if s.limited else 1.0) / s.fps  # held back: half its rate
                s._due = max(s._due, now - period) + period  # at most one period of catching up
                s.served += 1
                s._window[1] += 1
                entries.append(Entry(s, payload, t_frame, s.rung))
            return Batch(key, entries, now)

    def wait_s(self, now: float | None = None) -> float:
        """Seconds until a stream with a frame becomes due (at most one control window)."""
        with self._cond:
            now = self.clock() if now is None else now
            dues = [s._due for s in self._streams if s._pending is not None]
            return max(0.0, min([self.window_s] + [d - now - self._estimate(now) for d in dues]))

    def wait(self, most_s: float = 0.5) -> None:
        """Block the device loop until a frame is offered or one may be due (at most `most_s`);
        judged under the lock, so an offer made since `next_batch` is not missed."""
        with self._cond:
            self._cond.wait(min(most_s, max(0.001, self.wait_s())))

    def _estimate(self, now: float) -> float:
        recent = [seconds for end, seconds, _ in list(self._batches)[-8:]]
        return float(np.median(recent)) if recent else 0.0

    def done(self, batch: Batch, pictures: dict[int, Any], errors: dict[int, str] | None = None,
             now: float | None = None) -> None:
        """The device ran `batch`: `pictures` by stream number (a stream left out made no new
        picture, e.g. its similarity filter kept the last one), `errors` by stream number."""
        with self._cond:
            now = self.clock() if now is None else now
            seconds = max(0.0, now - batch.started)
            self._window_busy += seconds
            self._batches.append((now, seconds, len(batch.entries)))
            self.batches_run += 1
            if not errors:
                self.cost.add(batch.rounds, batch.work, seconds)
            for entry in batch.entries:
                s = entry.stream
                s.batch_sizes.append(len(batch.entries))
                if errors and s.number in errors:
                    s.error = errors[s.number]
                    continue
                if s.number not in pictures:
                    continue
                age = now - entry.t_frame
                if age > s.max_age_s:
                    s.stale += 1
                    continue
                s.latest = pictures[s.number]
                s.pictures += 1
                s.picture_times.append(now)
                s.ages.append(age)
            self._control(now)

    # -- the ladder ----------------------------------------------------------------------------

    def _starved(self, s: StreamHandle) -> bool:
        """Got under its floor in the last window while its camera offered enough frames."""
        offered, served = s._last_window
        wanted = s.fps * self.window_s
        return offered >= self.floor * wanted and served < self.floor * wanted

    def _control(self, now: float) -> None:
        if now - self._window_start < self.window_s:
            return
        elapsed = now - self._window_start
        self.busy_share = min(1.0, self._window_busy / elapsed)
        self._window_start, self._window_busy = now, 0.0
        for s in self._streams:
            s._last_window = tuple(s._window)
            s._window = [0, 0]
        starved = [s for s in self._streams if not s.limited and self._starved(s)]  # held back: expected
        if starved and self.busy_share >= self.up_share * 0.9:
            self._step_down(now, starved)
        elif not starved:
            held = [s for s in self._streams if s.limited]
            if not held:
                self._step_up(now)
            elif self._share([(s.fps, s.rung) for s in self._streams]) <= self.up_share:
                for s in held:  # the device holds everyone at full rate again
                    s.limited = False

    def _step_down(self, now: float, starved: list[StreamHandle]) -> None:
        movable = [s for s in self._streams if s.level < len(s.rungs) - 1]
        if not movable:
            # Everyone is on the lowest rung and still short: hold back the newest streams so
            # the older ones keep their rate (admission refuses more meanwhile).
            for s in sorted(self._streams, key=lambda s: -s.number)[: max(1, len(starved) // 2)]:
                s.limited = True
            return
        # The best-quality streams, all of that rung together: they stay in one batch.
        best = min(s.level for s in movable)
        for s in movable:
            if s.level != best:
                continue
            s.level += 1
            if now - s._last_up < 3 * self.window_s:  # its last step up did not hold
                s._hold_s = min(60.0, max(2 * self.window_s, 2 * s._hold_s))
            s._hold_until = now + s._hold_s

    def _step_up(self, now: float) -> None:
        """The lowest-quality streams (those on one rung, together) one rung up, if the cost
        model says the device then stays under `up_share`."""
        if not self.cost.known:
            return
        candidates = [s for s in self._streams if s.level > 0 and now >= s._hold_until]
        if not candidates:
            return
        worst = max(s.level for s in candidates)
        group = {id(s) for s in candidates if s.level == worst}
        demand = [(o.fps, o.rungs[o.level - 1] if id(o) in group else o.rung) for o in self._streams]
        if self._share(demand) <= self.up_share:
            for s in self._streams:
                if id(s) in group:
                    s.level -= 1
                    s._last_up = now

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, now: float | None = None, horizon_s: float = 5.0) -> dict[str, Any]:
        """Server-wide: device busy share, batches per second and mean batch size (over the last
        `horizon_s`), streams served."""
        with self._cond:
            now = self.clock() if now is None else now
            recent = [(seconds, size) for end, seconds, size in self._batches if now - end <= horizon_s]
            return {
                "streams": len(self._streams),
                "busy_share": round(min(1.0, sum(s for s, _ in recent) / horizon_s), 3),
                "batches_per_s": round(len(recent) / horizon_s, 2),
                "mean_batch_size": round(float(np.mean([n for _, n in recent])), 2) if recent else None,
                "batches": self.batches_run,
            }
