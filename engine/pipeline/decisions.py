"""What the pipeline does with a frame, decided in one place for the CPU pipeline (`stages`) and
the device pipeline (`device`) alike, and published to the page (`param_ui`): which effects need
the person's mask, when the segmentation model looks at a frame and when its last mask is
reused, whether the quality ladder's rung keeps the guided filter, and what shows behind the
person (with its fallback)."""

from __future__ import annotations

from typing import Callable

from ..effects.backgrounds import Backgrounds
from ..media.motion import MotionGate, block_change
from ..params import Params, hex_to_rgb
from .budget import Quality

# Effects that composite the person over a layer of their own.
NEEDS_MASK = ("blur", "replace", "remove")
# Diffusion modes that composite with the person's mask (the whole-frame mode needs none).
DIFFUSION_MODES_WITH_MASK = ("background", "person", "backdrop")
MAX_SKIPPED = 3  # segment_skip: frames in a row that may take the last mask


def needs_mask(p: Params) -> bool:
    """Whether this frame's effect needs the person's mask."""
    return p.effect in NEEDS_MASK or (p.effect == "diffusion" and p.diffusion_mode in DIFFUSION_MODES_WITH_MASK)


def feather(p: Params, quality: Quality) -> int:
    """The guided filter's radius (pixels at 720p) for this frame: 0 when off or dropped by the
    ladder's rung."""
    return p.mask_feather if quality.feather else 0


def background(p: Params, backgrounds: Backgrounds) -> tuple[str, tuple[int, int, int] | None]:
    """What shows behind the person: ("blur", None), ("image", None), or ("colour", rgb); an
    image that is gone (an upload pushed out) falls back to the background colour."""
    if p.effect == "blur":
        return "blur", None
    if p.effect == "remove":
        return "colour", hex_to_rgb(p.key_color)
    if p.background == "image" and p.background_image in backgrounds:
        return "image", None
    return "colour", hex_to_rgb(p.background_color)


class MaskSchedule:
    """When the segmentation model looks at a frame, and when the last mask it made is reused:
    on the ladder's mask-every-n rungs (decided before the model's input is made), and, with
    `segment_skip`, while its input barely moved since the frame it last ran on (decided on that
    input; see `media.motion.MotionGate`). A model switch always runs the new model. One per
    stream's pipeline; `calls` and `reused` count the frames of each kind."""

    def __init__(self, change: Callable = block_change, max_skipped: int = MAX_SKIPPED):
        self._gate = MotionGate(max_skipped, change)
        self._model: str | None = None  # the model whose mask is the last one
        self._frames = 0
        self.calls = self.reused = 0

    def look(self, model: str, quality: Quality) -> bool:
        """Before the model's input is made: False when the last mask is reused outright."""
        self._frames += 1
        if self._model == model and self._frames % quality.mask_every:
            self.reused += 1
            return False
        return True

    def run(self, model: str, picture, levels: float) -> bool:
        """With the model's input (`picture`, the rows the motion measure may read) made: True
        runs the model, False reuses the last mask (the picture barely moved)."""
        if self._model != model:
            self._gate.forget()
        if self._gate.must_run(picture, levels):
            self._model = model
            self.calls += 1
            return True
        self.reused += 1
        return False

    def saw(self, picture) -> None:
        """The model ran on `picture` too, in the same call's frame (see MotionGate.saw)."""
        self._gate.saw(picture)

    def counts(self) -> dict[str, int]:
        return {"calls": self.calls, "reused": self.reused}
