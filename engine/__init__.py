"""camfx.engine."""
