"""camfx.export."""
