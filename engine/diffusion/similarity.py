"""Skip frames that look like the last one made into a picture (StreamDiffusion's stochastic
similarity filter)."""

from __future__ import annotations

import cv2
import numpy as np


class SimilarityFilter:
    """Skip frames that look like the last processed one (StreamDiffusion's stochastic filter).

    The cosine similarity s of the new frame to the last *processed* frame (both downscaled,
    centred on 0) gives a skip probability max(0, (s - threshold) / (1 - threshold)): 0 below
    the threshold, 1 for an identical frame. A draw rather than a hard cut avoids a visible
    step when the scene starts moving. Comparing with the last processed frame (not the last
    seen one) catches slow drift; `max_skips` in a row forces a refresh anyway. threshold 0
    turns the filter off.
    """

    def __init__(self, threshold: float = 0.98, max_skips: int = 10, seed: int = 0, size: int = 64):
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"similarity threshold must be in [0, 1), got {threshold!r}")
        self.threshold, self.max_skips, self.size = threshold, max_skips, size
        self._rng = np.random.default_rng(seed)
        self._reference: np.ndarray | None = None
        self._skipped = 0
        self.last_similarity = 0.0

    def reset(self) -> None:
        self._reference, self._skipped = None, 0

    def should_skip(self, rgb: np.ndarray) -> bool:
        if self.threshold <= 0:
            return False
        h, w = rgb.shape[:2]
        scale = self.size / max(h, w)
        small = cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        x = small.astype(np.float32).ravel() / 127.5 - 1.0
        ref = self._reference
        if ref is not None and ref.shape == x.shape and self._skipped < self.max_skips:
            denom = float(np.linalg.norm(x) * np.linalg.norm(ref)) or 1e-12
            self.last_similarity = float(np.dot(x, ref)) / denom
            p_skip = max(0.0, (self.last_similarity - self.threshold) / (1.0 - self.threshold))
            if self._rng.random() < p_skip:
                self._skipped += 1
                return True
        self._reference, self._skipped = x, 0
        return False
