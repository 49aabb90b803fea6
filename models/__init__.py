"""camfx.models."""
