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


def machine() -> dict:
    """What a reader needs to trust a figure: CPU model and cores, GPU (if any), Python and the
    versions of the packages on the frame's way."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count() or 0, "gpu": gpus(), "python": platform.python_version(),
            "versions": versions()}


PACKAGES = ("camfx", "aiortc", "av", "onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python-headless", "torch", "tensorrt")


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide camfx's figures (those present)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def gpus() -> list[str]:
    """NVIDIA GPUs as nvidia-smi names them (name, driver, memory); empty without one."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


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
