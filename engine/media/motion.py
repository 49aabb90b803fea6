"""How much the picture moved since the segmentation model last looked at it, measured on the
model's own input (a few tens of thousands of pixels: tens of microseconds)."""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16  # model-input pixels per block side (about 45 px of a 720p frame)


def block_change(picture: np.ndarray, seen: np.ndarray) -> float:
    """The largest mean absolute change of any BLOCK x BLOCK block, in 8-bit levels, over the
    colour channels. A block, not the whole picture: a hand moving in one corner must count
    even though most of the picture stood still. Means are rounded to whole levels."""
    h, w = picture.shape[:2]
    diff = cv2.absdiff(picture, seen)
    blocks = cv2.resize(diff, (max(1, w // BLOCK), max(1, h // BLOCK)), interpolation=cv2.INTER_AREA)
    return float(blocks.max())


class MotionGate:
    """Says whether the model must look at this frame, or its last mask still holds: it must
    when the picture changed by `levels` or more in some block since the frame it last saw (not
    the previous frame: slow drift adds up), or after `max_skipped` frames in a row without it."""

    def __init__(self, max_skipped: int = 3, change=block_change):
        """`change(picture, seen) -> levels`: `block_change`, or the same measure on another
        kind of array (the device pipeline's tensors)."""
        self.max_skipped = max_skipped
        self._change = change
        self._seen: np.ndarray | None = None  # the last model input the model ran on
        self._skipped = 0

    def must_run(self, picture: np.ndarray, levels: float) -> bool:
        """`picture`: this frame's model input (8-bit levels). `levels` 0 turns the gate off."""
        if (
            levels <= 0
            or self._seen is None
            or self._seen.shape != picture.shape
            or self._skipped >= self.max_skipped
            or self._change(picture, self._seen) >= levels
        ):
            self._seen, self._skipped = picture, 0
            return True
        self._skipped += 1
        return False

    def saw(self, picture: np.ndarray) -> None:
        """The model also ran on `picture` (this frame, looked at again another way): later
        frames are compared with it."""
        self._seen = picture

    def forget(self) -> None:
        """The next frame goes to the model (its mask is not comparable: another model, say)."""
        self._seen = None
