"""`camfx doctor`: for each way of using camfx, what this machine has and what to do about what it
lacks (the virtual camera of a video call, the browser page), then the runtimes: which one each
model will use."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
import subprocess

from .runtimes.probe import missing_extra, module_available


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu() -> str:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            return out or "nvidia-smi found no GPU"
        except (subprocess.SubprocessError, OSError) as exc:
            return f"nvidia-smi failed: {exc}"
    return "none found (no nvidia-smi)"


def facts() -> list[tuple[str, str]]:
    import onnxruntime as ort

    from .runtimes.cache import cache_dir
    from .runtimes.probe import available_onnx_providers, tensorrt_facts

    rows = [
        ("python", platform.python_version()),
        ("GPU", _gpu()),
        ("onnxruntime", f"{ort.__version__}; providers: {', '.join(available_onnx_providers())}"),
    ]
    if not module_available("torch"):
        rows.append(("torch", "not installed (only the diffusion and export extras need it)"))
    else:
        import torch

        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no CUDA"
        rows.append(("torch", f"{torch.__version__}; {cuda}"))
    trt = _version("tensorrt") or _version("tensorrt-cu12")
    rows.append(("TensorRT", trt or "not installed"))
    rows.append(("cache (TensorRT plans, exports)", str(cache_dir())))
    facts_trt = tensorrt_facts()
    rows.append(("native TensorRT", "usable" if facts_trt else "not usable here (needs tensorrt, torch and a CUDA GPU)"))
    return rows


def model_rows() -> list[tuple[str, str]]:
    """Per model, the runtime that would serve it (the chain is actually loaded, as serve does)."""
    from camfx.models.registry import SEGMENTATION_MODELS

    from .pipeline.segmenter import Segmenters

    rows = []
    segmenters = Segmenters()
    for name in SEGMENTATION_MODELS:
        try:
            runtime = segmenters.get(name).runtime
            failed = getattr(runtime, "failures", [])
            rows.append((f"segmentation {name}", runtime.name + (f" (after: {'; '.join(failed)})" if failed else "")))
        except Exception as exc:
            rows.append((f"segmentation {name}", f"cannot load: {exc}"))
    if missing_extra("diffusion"):
        rows.append(("diffusion", f"unavailable: {missing_extra('diffusion')}"))
    else:
        import torch

        from .runtimes.cache import export_dir

        device = "torch CUDA fp16" if torch.cuda.is_available() else "torch CPU fp32 (slow: seconds per picture)"
        rows.append(("diffusion UNet + TAESD", device))
        exported = sorted(p.stem for p in export_dir().glob("*.json"))
        rows.append(("diffusion exported", ", ".join(exported) if exported else
                     "nothing (camfx export engines --diffusion): torch serves them"))
    return rows


MARK = {True: "ok", False: "MISSING", None: "note"}


def scenario_lines(title: str, checks) -> list[str]:
    """A scenario's checks as the terminal shows them: a mark, what, the finding, and the fix."""
    width = max(len(c.what) for c in checks)
    lines = [title]
    for check in checks:
        lines.append(f"  {MARK[check.ok]:<7}  {check.what:<{width}}  {check.finding}")
        if check.fix:
            lines.append(f"  {'':<7}  {'':<{width}}  -> {check.fix}")
    return lines


def main(argv: list[str]) -> int:
    from . import setup_checks

    if argv and argv[0] in ("-h", "--help"):
        print("usage: camfx doctor\n\n" + (__doc__ or ""))
        return 0
    logging.basicConfig(level=logging.WARNING)
    camera = setup_checks.virtual_camera()
    sections = [
        scenario_lines("video call or OBS, through a virtual camera (camfx camera)", camera),
        scenario_lines("the browser page (camfx serve)", setup_checks.browser_origin()),
    ]
    for lines in sections:
        print("\n".join(lines) + "\n")
    print("runtimes (camfx serve, camfx camera)")
    rows = facts() + [("", "")] + model_rows()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:>{width}}  {value}" if key else "")
    if any(c.ok is False for c in camera):
        print("\nthe virtual camera is not ready: do what the -> lines say (a file output, --output out.mp4, "
              "works meanwhile)")
    return 0
