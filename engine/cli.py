"""The `camfx` command: serve, camera, cluster, export, bench, doctor."""

from __future__ import annotations

import importlib
import sys

from camfx import __version__

COMMANDS = {  # name -> (one line of help, module with main(argv), the extra it needs)
    "serve": ("serve the demo page and the WebRTC effects engine", "camfx.engine.serve", None),
    "camera": ("your webcam, processed, as a virtual camera for calls (here or on a camfx server)",
               "camfx.engine.client.cli", "camera"),
    "cluster": ("camfx on a Ray cluster: up, status, down (sessions placed by load, a GPU per replica)",
                "camfx.engine.deploy.cli", "cluster"),
    "export": ("rebuild the bundled models, or ONNX / TensorRT engines ahead of time", "camfx.export.cli", "export"),
    "bench": ("benchmarks that write JSON and PNG plots (latency, engine, soak, ...)", "camfx.bench.cli", "bench"),
    "doctor": ("what this machine can run, and which runtime each model will use", "camfx.engine.doctor", None),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: camfx COMMAND [options]   (camfx COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (help_, _, _) in COMMANDS.items()]
    lines += ["", "  --version  print camfx's version"]
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"camfx: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"camfx {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        _fail(f"unknown command {argv[0]!r}; `camfx --help` lists them")
        return 2
    _, module, extra = COMMANDS[argv[0]]
    try:
        return importlib.import_module(module).main(argv[1:]) or 0
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top == "camfx":
            raise  # a bug of ours, not a missing extra
        hint = f"pip install 'camfx[{extra}]'" if extra else "reinstall camfx"
        return _fail(f"`camfx {argv[0]}` needs {top}, which is not installed: {hint}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
