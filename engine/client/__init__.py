"""`camfx camera`: sources (webcam, file), sinks (virtual camera, file, window), local mode and the thin client."""
