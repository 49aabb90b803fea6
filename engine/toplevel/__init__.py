"""camfx: real-time video effects over WebRTC. The parts import as camfx.engine, camfx.models,
camfx.export, camfx.bench and camfx.demo; this package holds only the version and
`python -m camfx`."""

from camfx.engine.cli import version

__version__ = version()
