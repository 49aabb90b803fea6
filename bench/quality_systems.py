"""The systems `camfx bench quality` compares, behind one small interface.

A system sees a clip's I420 frames in order and returns, per frame, the person's alpha at the
frame's size and the output frame for an effect (blur, replace or remove, each at the defaults of
`Params`). `reset()` starts a new clip: temporal state must not leak between clips or effects.
"""

from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

from camfx.engine.effects import filters as effects
from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.media import yuv
from camfx.engine.params import Params, hex_to_rgb
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import Pipeline, Work, default_pipeline

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
    `make_pipeline(segmenters, backgrounds)` builds it (`default_pipeline` unless told);
    `params`: fields to set on top of each effect's defaults, e.g. {"mask_smoothing": 0.5}."""

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, name: str = "camfx",
                 make_pipeline: Callable[[Segmenters, Backgrounds], Pipeline] = default_pipeline,
                 params: dict | None = None):
        self.name = name
        self._make = lambda: make_pipeline(segmenters, backgrounds)
        self._pipeline = self._make()
        self._overrides = dict(params or {})
        self._params: dict[str, Params] = {}

    def reset(self) -> None:
        self._pipeline = self._make()

    @staticmethod
    def blur(frame: np.ndarray, sigma: float) -> np.ndarray:
        """camfx's blur of a frame with nobody in it: its normalised blur, every pixel kept."""
        h, w = yuv.frame_size(frame)
        return effects.blurred(frame, sigma, keep=np.ones((h // 4, w // 4), np.float32))

    def process(self, frame: np.ndarray, effect: str) -> tuple[np.ndarray, np.ndarray]:
        if effect not in self._params:
            self._params[effect] = Params(**{**self._overrides, "effect": effect})
        params = self._params[effect]
        work = self._pipeline.process(Work(image=frame, params=params))
        return full_size(work.alpha, *yuv.frame_size(frame)), work.output


class Raw:
    """The bundled model (Params' default) with a plain blend: its probability scaled to the frame
    and the frame composited over the effect's layer made from the whole frame (blur), the
    background image, or the key colour. No smoothing, no feathering: the yardstick."""

    def __init__(self, segmenters: Segmenters, backgrounds: Backgrounds, model: str | None = None,
                 name: str = "raw"):
        self.name = name
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
