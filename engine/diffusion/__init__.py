"""The `diffusion` effect: served models, the per-stream worker, the stylizer and its runtimes."""
