"""The one schema for effect parameters.

The same model validates CLI flags, `POST /offer` params, `POST /sessions/{id}/params`
and messages on the `control` data channel, so a field means the same thing everywhere.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from camfx.models.registry import SD_TURBO

Effect = Literal["none", "blur", "replace", "remove", "toon", "diffusion"]
EFFECTS: tuple[str, ...] = Effect.__args__  # type: ignore[attr-defined]

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class Params(BaseModel):
    """Live effect parameters of one session. Every field can change without renegotiating."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    effect: Effect = Field("blur", description="what happens to the picture")
    blur_strength: float = Field(12.0, ge=1.0, le=50.0,
                                 description="blur: Gaussian sigma in pixels at 720p (scaled with the frame height)")
    background: Literal["color", "image"] = Field("image", description="replace: a solid colour, or an image "
                                                                        "or looped video (background_image)")
    background_color: str = Field("#2f5d8a", description="replace: the colour, like '#2f5d8a' (also contain's bars)")
    background_image: str = Field("studio", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="replace: a bundled background (GET /backgrounds lists them) or "
                                              "the id of an uploaded image or video")
    background_fit: Literal["cover", "contain"] = Field(
        "cover", description="replace: fill the frame, cropping the image (cover), or show it whole on bars of "
                             "background_color (contain)")
    key_color: str = Field("#00ff00", description="remove: the key colour for chroma keying downstream (OBS)")
    toon_smoothing: int = Field(2, ge=1, le=5, description="toon: edge-preserving smoothing passes")
    toon_edges: float = Field(0.6, ge=0.0, le=1.0, description="toon: how dark the outlines are")
    # The server also checks that diffusion_model is one it serves.
    diffusion_mode: Literal["frame", "background", "person", "backdrop"] = Field(
        "background", description="diffusion: restyle the whole frame, the background, the person, "
                                  "or generate a backdrop behind the person")
    backdrop_source: Literal["prompt", "room"] = Field(
        "prompt", description="backdrop: from the prompt alone (txt2img, remade when it changes) or from "
                              "the room with the person taken out (img2img, remade as fast as it can be)")
    prompt: str = Field("a watercolor painting, soft light", max_length=500, description="diffusion: the look")
    strength: float = Field(0.5, gt=0.0, le=1.0, description="diffusion: how far from the camera's picture")
    steps: int = Field(1, ge=1, le=4, description="diffusion: UNet calls per picture")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="diffusion: the stream's fixed noise")
    diffusion_size: int = Field(512, ge=128, le=1024, multiple_of=64,
                                description="diffusion: long side of the picture the model works on")
    diffusion_model: str = Field(SD_TURBO, min_length=1, max_length=200,
                                 description="diffusion: a model this server serves (GET /healthz lists them)")
    diffusion_feedback: float = Field(0.0, ge=0.0, le=0.9,
                                      description="diffusion: weight of the previous latent, against flicker "
                                                  "(adds that much lag); 0 = off")
    similarity_threshold: float = Field(0.0, ge=0.0, lt=1.0,
                                        description="diffusion: skip frames nearly identical to the last one "
                                                    "(StreamDiffusion uses 0.98); 0 = off")
    guidance: float = Field(1.0, ge=1.0, le=3.0,
                            description="diffusion: residual self-negative guidance; 1 = off (turbo models need none)")
    stream_batch: bool = Field(False, description="diffusion: denoise successive frames' steps in one UNet batch "
                                                  "(more fps at steps > 1, steps - 1 frames of lag)")
    diffusion_fps: float = Field(0.0, ge=0.0, le=60.0,
                                 description="diffusion: target picture rate; 0 = auto, what the device holds this "
                                             "stream at alone (at most 30)")
    diffusion_max_age_ms: int = Field(0, ge=0, le=10000,
                                      description="diffusion: a picture made from a frame older than this is not "
                                                  "shown; 0 = auto, two pictures' time and at least 250")
    model: Literal["general", "landscape"] = Field(
        "general", description="segmentation model: general (256x256: the steadier, closer mask at every frame "
                               "shape, see `camfx bench quality`) or landscape (144x256: cheaper)")
    mask_mode: Literal["soft", "threshold"] = Field("soft", description="a soft alpha mask, or a hard threshold")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="threshold mode: where person begins")
    mask_smoothing: float = Field(0.6, ge=0.0, le=0.9,
                                  description="steadiness of the mask where the picture is still (weight of the "
                                              "previous mask there; where it moves the new mask is taken at "
                                              "once, so no lag); 0 = off")
    mask_feather: int = Field(0, ge=0, le=32, description="guided-filter radius (pixels at 720p) that snaps "
                                                          "mask edges to image edges; 0 = off (the default: on "
                                                          "`camfx bench quality` it spreads the edge into hair)")
    light_wrap: float = Field(0.0, ge=0.0, le=1.0, description="how much of the new background's light "
                                                               "wraps onto the person's edge (blur, replace); "
                                                               "0 = off")
    mask_region: bool = Field(True, description="the model looks at a region around the person rather than the "
                                                 "whole frame: it sees her undistorted and larger, so the edge follows "
                                                 "hair and shoulders closer (see `camfx bench quality`); off = the "
                                                 "whole frame")
    segment_skip: float = Field(4.0, ge=0.0, le=32.0,
                                description="reuse the last mask while the picture barely moves: the model "
                                            "skips a frame when no 16x16 block of its input changed by this "
                                            "many 8-bit levels since the frame it last saw (at most 3 frames "
                                            "in a row); 0 = off (the model on every frame)")
    # Face: found by the face models and followed between detections (engine/faces).
    framing: Literal["off", "follow", "tight"] = Field(
        "off", description="auto frame: a crop that follows the face (or the group): head and shoulders "
                           "(follow) or the face (tight); the full frame when nobody is there")
    light: Literal["off", "studio", "key"] = Field(
        "off", description="face light: exposure and white balance evened and the background dimmed a little "
                           "(studio), plus a soft key light from one side (key)")
    low_light: float = Field(0.0, ge=0.0, le=1.0, description="low light: gain that keeps skin tones, and a "
                                                              "denoise; 0 = off")
    vignette: float = Field(0.0, ge=0.0, le=1.0, description="darker corners; 0 = off")
    touch_up: float = Field(0.0, ge=0.0, le=1.0, description="skin smoothing on the face (eyes, brows and lips "
                                                             "stay sharp); 0 = off")
    people: Literal["all", "main"] = Field(
        "all", description="who stays in front of the background: everyone, or only the main person "
                           "(the largest face nearest the centre)")
    probe: bool = Field(False, description="keep the top 16 rows of the input, so a latency probe can match "
                                           "output to input")

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
            raise ParamsError([field_error("", "expected a JSON object of parameters")])
        try:
            return Params.model_validate({**self.model_dump(), **patch})
        except ValidationError as exc:
            raise ParamsError.from_validation(exc) from None


def field_error(field: str, message: str) -> dict[str, str]:
    """One entry of an error's `errors` list: the field it is about ("" for the whole input)."""
    return {"field": field, "message": message}


class ParamsError(ValueError):
    """Invalid parameters; `errors` is a list of {"field", "message"} for a 422 body."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors))

    @classmethod
    def from_validation(cls, exc: ValidationError) -> "ParamsError":
        return cls(
            [field_error(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]
        )


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return (r, g, b)
