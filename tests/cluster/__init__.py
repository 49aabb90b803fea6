"""camfx on a local Ray cluster."""
