"""Small helpers shared by the benchmarks: percentiles and result files."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """Median / p95 / p99 in milliseconds of a list of durations in seconds."""
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds) * 1000
    return {
        "n": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
    }


def machine() -> dict[str, str | int]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count() or 0, "python": platform.python_version()}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def axes(width: float, height: float):
    """(figure, axes) for a plot, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save(out: Path, name: str, data: dict, plot: Callable[[dict], Any] | None = None) -> None:
    """Write `out/name.json` and, when given, the figure `plot(data)` draws as `out/name.png`."""
    print("wrote", write_json(out / f"{name}.json", data))
    if plot is not None:
        fig = plot(data)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        print("wrote", out / f"{name}.png")
