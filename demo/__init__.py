"""camfx.demo."""
