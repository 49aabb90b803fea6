"""What one measurement cost and whether it can be trusted: the machine's CPU and a server
process's CPU (in cores, from the process's own CPU clock) over an interval, and the rule that
marks a row unreliable instead of letting it be averaged in."""

from __future__ import annotations

import time

import psutil

MIN_FPS_SHARE = 0.95  # a row whose frames came (or went) below 95% of the camera's rate
MAX_MACHINE_CPU = 90.0  # or whose machine was this busy (percent of all cores)


class Usage:
    """CPU spent between start() and stop(): the whole machine's share, and each watched
    process's cores (1.0 = one core busy the whole interval)."""

    def __init__(self, pids: dict[str, int] | None = None):
        self._procs = {name: psutil.Process(pid) for name, pid in (pids or {}).items()}

    def start(self) -> "Usage":
        self._t0 = time.perf_counter()
        self._machine0 = psutil.cpu_times()
        self._procs0 = {name: _cpu_seconds(p) for name, p in self._procs.items()}
        return self

    def stop(self) -> dict:
        elapsed = time.perf_counter() - self._t0
        machine = psutil.cpu_times()
        busy = _busy(machine) - _busy(self._machine0)
        total = _total(machine) - _total(self._machine0)
        cores = {name: round((_cpu_seconds(p) - self._procs0[name]) / elapsed, 3) for name, p in self._procs.items()}
        return {"machine_cpu_percent": round(100 * busy / total, 1) if total > 0 else 0.0, "cores": cores}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _total(times) -> float:
    # Linux counts guest time inside user time as well: leave it out so nothing counts twice.
    return sum(v for k, v in times._asdict().items() if k not in ("guest", "guest_nice"))


def _busy(times) -> float:
    return _total(times) - times.idle - getattr(times, "iowait", 0.0)


def unreliable_reasons(camera_fps: float, sent_fps: float, received_fps: float, machine_cpu: float) -> list[str]:
    """Why a measurement cannot be trusted as the server's figure (empty when it can)."""
    floor = MIN_FPS_SHARE * camera_fps
    reasons = []
    if sent_fps < floor:
        reasons.append(f"the sender held {sent_fps:.1f} of {camera_fps:g} fps")
    if received_fps < floor:
        reasons.append(f"{received_fps:.1f} of {camera_fps:g} fps came back")
    if machine_cpu > MAX_MACHINE_CPU:
        reasons.append(f"the machine's CPU was {machine_cpu:.0f}% busy")
    return reasons
