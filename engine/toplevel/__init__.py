"""camfx: real-time video effects over WebRTC. The parts import as camfx.engine, camfx.models,
camfx.export, camfx.bench and camfx.demo; this package holds only the version and
`python -m camfx`."""

import importlib.metadata


def version() -> str:
    try:
        return importlib.metadata.version("camfx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


__version__ = version()
