"""The systems `camfx bench quality` compares, behind one small interface.

A system sees a clip's I420 frames in order and returns, per frame, the person's alpha at the
frame's size and the output frame for an effect (blur, replace or remove, each at the defaults of
`Params`). `reset()` starts a new clip: temporal state must not leak between clips or effects.
"""

from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

from camfx.engine import effects, yuv
from camfx.engine.backgrounds import Backgrounds
from camfx.engine.params import Params, hex_to_rgb
from camfx.engine.pipeline import Pipeline, Work, default_pipeline
from camfx.engine.segmenter import Segmenters

EFFECTS = ("blur", "replace", "remove")


class System(Protocol):
    name: str

    def reset(self) -> None: ...

    def process(self, frame: np.ndarray, effect: str) -> tuple[np.ndarray, np.ndarray]:
        """(alpha float32 at the frame's size, output I420) for this frame."""
        ...


def full_size(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """A mask at any resolution scaled (bilinear) to the frame, float32."""
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.shape == (height, width):
        return alpha.copy()
    return cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)


class Camfx:
    """camfx's own pipeline, as a session runs it (a fresh one per clip: it keeps state).
    `make_pipeline(segmenters, backgrounds)` builds it; `default_pipeline` unless told."""

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, name: str = "camfx",
                 make_pipeline: Callable[[Segmenters, Backgrounds], Pipeline] = default_pipeline):
        self.name = name
        self._make = lambda: make_pipeline(segmenters, backgrounds)
        self._pipeline = self._make()
        self._params: dict[str, Params] = {}

    def reset(self) -> None:
        self._pipeline = self._make()

    def process(self, frame: np.ndarray, effect: str) -> tuple[np.ndarray, np.ndarray]:
        params = self._params.setdefault(effect, Params(effect=effect))
        work = self._pipeline.process(Work(image=frame, params=params))
        return full_size(work.alpha, *yuv.frame_size(frame)), work.output


class Raw:
    """The bundled model (Params' default) with a plain blend: its probability scaled to the frame
    and the frame composited over the effect's layer made from the whole frame (blur), the
    background image, or the key colour. No smoothing, no feathering: the yardstick."""

    name = "raw"

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, model: str | None = None):
        self._segmenter = segmenters.get(model or Params().model)
        self._backgrounds = backgrounds

    def reset(self) -> None:
        pass

    def layer(self, frame: np.ndarray, effect: str) -> np.ndarray:
        p = Params(effect=effect)
        h, w = yuv.frame_size(frame)
        if effect == "blur":
            return effects.blurred(frame, p.blur_strength)
        if effect == "replace":
            return self._backgrounds.frame(p.background_image, h, w)
        return effects.solid(h, w, hex_to_rgb(p.key_color))

    def process(self, frame: np.ndarray, effect: str) -> tuple[np.ndarray, np.ndarray]:
        h, w = yuv.frame_size(frame)
        alpha = full_size(self._segmenter(frame), h, w)
        return alpha, effects.composite(frame, self.layer(frame, effect), alpha)
