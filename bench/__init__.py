"""camfx.bench."""
