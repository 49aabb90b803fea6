"""The one schema for effect parameters.

The same model validates CLI flags, `POST /offer` params, `POST /sessions/{id}/params`
and messages on the `control` data channel, so a field means the same thing everywhere.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Effect = Literal["none", "blur", "replace", "remove", "toon", "diffusion"]
EFFECTS: tuple[str, ...] = Effect.__args__  # type: ignore[attr-defined]

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class Params(BaseModel):
    """Live effect parameters of one session. Every field can change without renegotiating."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    effect: Effect = "blur"
    # blur: Gaussian sigma in pixels at 720p (scaled with frame height).
    blur_strength: float = Field(12.0, ge=1.0, le=50.0)
    # replace: a solid colour or an image (bundled name or uploaded id).
    background: Literal["color", "image"] = "image"
    background_color: str = "#2f5d8a"
    background_image: str = Field("studio", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    # remove: the key colour for chroma keying downstream (OBS).
    key_color: str = "#00ff00"
    # toon: edge-preserving smoothing passes and edge darkness.
    toon_smoothing: int = Field(2, ge=1, le=5)
    toon_edges: float = Field(0.6, ge=0.0, le=1.0)
    # diffusion: few-step img2img / txt2img (see camfx.engine.stylize); the server checks that
    # diffusion_model is one it serves.
    diffusion_mode: Literal["frame", "background", "person", "backdrop"] = "background"
    # backdrop: from the prompt alone (txt2img, made again when it changes) or from the room
    # (img2img of the camera picture with the person taken out, remade as fast as it can be).
    backdrop_source: Literal["prompt", "room"] = "prompt"
    prompt: str = Field("a watercolor painting, soft light", max_length=500)
    strength: float = Field(0.5, gt=0.0, le=1.0)
    steps: int = Field(1, ge=1, le=4)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # The long side of the picture the model works on (the short side follows the frame's shape).
    diffusion_size: int = Field(512, ge=128, le=1024, multiple_of=64)
    diffusion_model: str = Field("stabilityai/sd-turbo", min_length=1, max_length=200)
    # Weight of the previous clean latent, against flicker (adds that much lag); 0 = off.
    diffusion_feedback: float = Field(0.0, ge=0.0, le=0.9)
    # Skip frames nearly identical to the last one generated (StreamDiffusion uses 0.98); 0 = off.
    similarity_threshold: float = Field(0.0, ge=0.0, lt=1.0)
    # Residual self-negative guidance (1 = off: turbo models need none; no second UNet call).
    guidance: float = Field(1.0, ge=1.0, le=3.0)
    # Denoise successive frames' steps in one UNet batch: more fps at steps > 1, steps - 1 frames lag.
    stream_batch: bool = False
    # mask quality
    model: Literal["general", "landscape"] = "landscape"
    mask_mode: Literal["soft", "threshold"] = "soft"
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # Weight of the previous mask in an exponential moving average; 0 = none (no lag).
    mask_smoothing: float = Field(0.0, ge=0.0, le=0.9)
    # Guided-filter radius (pixels at 720p) that snaps mask edges to image edges; 0 = off.
    mask_feather: int = Field(4, ge=0, le=32)
    # Keep the top 16 rows of the input so latency probes can match output to input.
    probe: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("the prompt is empty; describe the look you want")
        return value

    @field_validator("background_color", "key_color")
    @classmethod
    def _hex_colour(cls, value: str) -> str:
        if not _HEX_COLOUR.match(value):
            raise ValueError("expected a colour like '#00ff00'")
        return value.lower()

    def updated(self, patch: dict[str, Any]) -> "Params":
        """A new Params with `patch` applied; raises ParamsError naming the bad field."""
        if not isinstance(patch, dict):
            raise ParamsError([{"field": "", "message": "expected a JSON object"}])
        try:
            return Params.model_validate({**self.model_dump(), **patch})
        except ValidationError as exc:
            raise ParamsError.from_validation(exc) from None


class ParamsError(ValueError):
    """Invalid parameters; `errors` is a list of {"field", "message"} for a 422 body."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError) -> "ParamsError":
        return cls(
            [
                {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
        )


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return (r, g, b)
