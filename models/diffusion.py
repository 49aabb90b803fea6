"""Few-step diffusion stylization of a live stream (the core of the `diffusion` effect).

`StreamStylizer` turns one RGB frame into a restyled one with 1 to 4 UNet calls, after the idea
of StreamDiffusion (Kodaira et al., 2023), written for this engine:

    frame -> TAESD encoder -> add fixed noise at t0 -> UNet (1..4 steps) -> TAESD decoder -> frame

Two model families, both loaded with diffusers / transformers `from_pretrained` (a hub id or a
local folder laid out like the hub repo; HF_HUB_OFFLINE / HF_HOME are honoured by huggingface_hub):

- `turbo` (default): `stabilityai/sd-turbo` (UNet, CLIP text encoder, tokenizer, scheduler
  config) with `madebyollin/taesd` as the VAE. Adversarially distilled; no classifier-free
  guidance, so one UNet call per step.
- `lcm`: an SD 1.5 base (`stable-diffusion-v1-5/stable-diffusion-v1-5`) with the LCM-LoRA
  `latent-consistency/lcm-lora-sdv1-5` fused into the UNet at load time (needs `peft`), also with
  TAESD and no guidance. The tests run this path on tiny models with a tiny LoRA; it has not been
  run with the real weights here (none can be downloaded on our machines).

Sampler. Both families predict noise (epsilon, or v where the scheduler config says so). One step
at timestep t turns the noisy latent x_t into a clean estimate x0 = (x_t - sqrt(1-a_t) eps) /
sqrt(a_t), where a_t is the scheduler's `alphas_cumprod`; the next step re-noises x0 to the next,
smaller timestep with the *same* per-stream noise. That is what sd-turbo's Euler sampler does with
"trailing" timesteps, and what LCM's multistep sampler does (LCM also mixes x_t back in with its
boundary-condition weights c_skip / c_out, which we apply for the `lcm` family). Only the scheduler
config's beta schedule and prediction type are used, so any DDPM-family scheduler config works.

Timesteps. `steps` (1..4) and `strength` (0 < s <= 1, how far the frame is pushed from the
camera picture) give `timestep_schedule`: evenly spaced, trailing, starting at 1000*s - 1, e.g.
steps=1, strength=0.5 -> [499]; steps=4, strength=1.0 -> [999, 749, 499, 249]. For `lcm` they
are snapped to LCM's training grid (every 20th timestep: 19, 39, ..., 999).

Streaming features:
- prompt embeddings are computed once and again only when the prompt changes (no reload);
- the noise is drawn once per resolution from `seed` and reused every frame: the same input gives
  the same output, and a still scene stays still instead of shimmering;
- buffers (noise, the input tensor) are allocated once per resolution;
- a stochastic similarity filter skips frames nearly identical to the last processed one and
  returns the previous output (`SimilarityFilter`);
- optional latent feedback blends each frame's clean latent with the previous one (`feedback`),
  trading a little lag for temporal stability;
- fp32 on CPU, fp16 + channels_last on CUDA.

- stream batch (`stream_batch`): with steps > 1, successive frames' steps share one UNet call
  (a batch of `steps`), so a frame costs one UNet call instead of `steps`, at the cost of
  `steps - 1` frames of added lag (`lag_frames`).

- residual self-negative CFG (`guidance` > 1, StreamDiffusion's RCFG "self" mode): the noise
  that made x_t stands in for the unconditional prediction, eps = n + g (eps_c - n), so guidance
  costs no second UNet call. 1 = off, right for turbo models; LCM-family models may like 1.2-2.

Prompts. An empty prompt is allowed: it is the unconditional embedding, so the model only
"cleans up" the frame towards its own idea of an image. A prompt longer than the text encoder
takes (75 tokens for CLIP, plus start and end) raises `PromptTooLongError` instead of being cut
silently: a live control should say its text was not used, not drop the end of it.

Not thread-safe: one instance per stream, used from one worker thread.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np
import torch

from camfx.engine.stage_clock import StageClock

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_TAESD = "madebyollin/taesd"
LCM_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
MAX_STEPS = 4
LATENT_FACTOR = 8  # TAESD and the SD VAE downscale by 8
LATENT_CHANNELS = 4

T = TypeVar("T")


class ModelNotFoundError(OSError):
    """Weights could not be loaded; the message says which and how to get them."""


class PromptTooLongError(ValueError):
    """The prompt has more tokens than the text encoder takes."""


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    return steps


def check_strength(strength: float) -> float:
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return float(strength)


def timestep_schedule(
    steps: int, strength: float, num_train_timesteps: int = 1000, lcm_grid: int | None = None
) -> list[int]:
    """Descending timesteps for `steps` UNet calls starting at `strength` of the noise range.

    `lcm_grid` (LCM's `original_inference_steps`, 50) snaps them to the timesteps LCM was
    distilled on.
    """
    check_steps(steps)
    start = num_train_timesteps * check_strength(strength)
    timesteps = [max(0, round(start * (steps - i) / steps) - 1) for i in range(steps)]
    if lcm_grid:
        c = num_train_timesteps // lcm_grid
        timesteps = [max(c - 1, min(num_train_timesteps - 1, round((t + 1) / c) * c - 1)) for t in timesteps]
    return timesteps


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


@dataclass
class _Buffers:
    """Per-resolution state, allocated once when the resolution is first seen."""

    height: int
    width: int
    noise: torch.Tensor  # [MAX_STEPS, 4, h/8, w/8]: one fixed noise per step
    image: torch.Tensor  # [1, 3, h, w] model input in [-1, 1]
    last_latent: torch.Tensor | None = None
    last_output: np.ndarray | None = None
    pipe: torch.Tensor | None = None  # stream batch: earlier frames' latents between steps


@dataclass
class DiffusionParts:
    """Loaded weights, shareable between streams (they are only read)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object | None  # None for random weights: see StreamStylizer._token_ids
    scheduler: object
    family: str  # "turbo" or "lcm"
    model_id: str
    device: torch.device
    dtype: torch.dtype


def load_parts(
    model_id: str = DEFAULT_MODEL,
    *,
    taesd_id: str = DEFAULT_TAESD,
    lora_id: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
) -> DiffusionParts:
    """Load (or, with random_weights, build) a model family onto `device`; see StreamStylizer.
    `compile_unet` the result's UNet for speed on a GPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # fp16 on GPUs (tensor cores, half the memory traffic); fp32 on CPU, where fp16 is slow.
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if random_weights:
        unet, vae, text_encoder, scheduler = _random_sd_turbo()
        tokenizer = None
        if dtype != torch.float32:  # built in fp32
            for module in (unet, vae, text_encoder):
                module.to(dtype=dtype)
    else:
        unet, vae, text_encoder, tokenizer, scheduler = _load_weights(model_id, taesd_id, lora_id, dtype)
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        # Convolutions in cuDNN prefer NHWC; the UNet and TAESD are mostly convolutions.
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    family = "lcm" if lora_id else "turbo"
    return DiffusionParts(unet, vae, text_encoder, tokenizer, scheduler, family, model_id, device, dtype)


def compile_unet(unet: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`torch.compile` for one static shape; on CUDA with mode "reduce-overhead", i.e. CUDA graphs
    replayed per call (the per-step launch overhead is what dominates 1-step sd-turbo on a fast
    GPU). The first call per input shape compiles: seconds to minutes, so warm it up."""
    return torch.compile(unet, mode="reduce-overhead" if device.type == "cuda" else "default", dynamic=False)


class StreamStylizer:
    """img2img for a live stream and txt2img for backdrops; see the module docstring.

    model_id / taesd_id: hub ids or local folders. lora_id: a LoRA to fuse (the `lcm` family).
    prompt, steps (1..4), strength (0, 1], feedback [0, 1), stream_batch: live, settable attributes.
    seed: the per-stream noise. similarity_threshold: 0 = filter off; StreamDiffusion uses 0.98.
    max_skips: most frames skipped in a row. device / dtype: default cuda+fp16 if there is a GPU,
    else cpu+fp32. random_weights: the full-size sd-turbo architecture, untrained, no download.
    parts: weights already loaded by `load_parts` (shared between streams); the model arguments
    are then ignored.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        *,
        taesd_id: str = DEFAULT_TAESD,
        lora_id: str | None = None,
        prompt: str = "",
        steps: int = 1,
        strength: float = 0.5,
        seed: int = 0,
        similarity_threshold: float = 0.0,
        max_skips: int = 10,
        feedback: float = 0.0,
        stream_batch: bool = False,
        guidance: float = 1.0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        random_weights: bool = False,
        parts: DiffusionParts | None = None,
    ):
        if parts is None:
            parts = load_parts(
                model_id, taesd_id=taesd_id, lora_id=lora_id, device=device, dtype=dtype,
                random_weights=random_weights,
            )
        self.parts = parts
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.device, self.dtype, self.family, self.model_id = parts.device, parts.dtype, parts.family, parts.model_id
        self._seed = seed
        config = self.scheduler.config
        self._alphas = self.scheduler.alphas_cumprod.to(torch.float64)  # a_t for t in 0..T-1
        self._prediction = config.get("prediction_type", "epsilon")
        self._lcm_grid = config.get("original_inference_steps", 50) if self.family == "lcm" else None
        self._vae_scale = float(self.vae.config.get("scaling_factor", 1.0))
        self._steps, self._strength = check_steps(steps), check_strength(strength)
        self._timesteps = self._schedule()
        self.feedback = feedback
        self.stream_batch = stream_batch
        self.guidance = guidance
        self.similarity = SimilarityFilter(similarity_threshold, max_skips, seed)
        self._prompt: str | None = None
        self._embeddings: torch.Tensor | None = None
        self.prompt = prompt
        self._buffers: _Buffers | None = None
        self.frames_processed = 0
        self.frames_skipped = 0
        self.timings: dict[str, float] = {}  # stage -> seconds, of the last generated frame

    @classmethod
    def lcm_lora(cls, model_id: str = LCM_BASE_MODEL, lora_id: str = LCM_LORA, **kwargs) -> "StreamStylizer":
        """SD 1.5 (or another SD 1.x base) with the LCM-LoRA fused in."""
        return cls(model_id, lora_id=lora_id, **kwargs)

    # -- loading -----------------------------------------------------------------------------

    # -- live parameters ---------------------------------------------------------------------

    @property
    def prompt(self) -> str:
        return self._prompt or ""

    @prompt.setter
    def prompt(self, prompt: str) -> None:
        if prompt == self._prompt:
            return
        self._embeddings = self._encode(prompt)  # raises before anything changes
        self._prompt = prompt

    @property
    def embeddings(self) -> torch.Tensor:
        """The text encoder's output for the current prompt, [1, 77, D]."""
        return self._embeddings

    def check_prompt(self, prompt: str) -> None:
        """Raise PromptTooLongError / TypeError as setting `prompt` would, without encoding it
        (tokenizing only: cheap enough to validate a live control)."""
        self._token_ids(prompt)

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, seed: int) -> None:
        if seed != self._seed:
            self._seed = seed
            self._buffers = None  # new fixed noise on the next frame

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, steps: int) -> None:
        self._steps = check_steps(steps)
        self._timesteps = self._schedule()

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, strength: float) -> None:
        self._strength = check_strength(strength)
        self._timesteps = self._schedule()

    @property
    def guidance(self) -> float:
        return self._guidance

    @guidance.setter
    def guidance(self, guidance: float) -> None:
        if not 1.0 <= guidance <= 10.0:
            raise ValueError(f"guidance must be in [1, 10] (1 = off), got {guidance!r}")
        self._guidance = float(guidance)

    @property
    def feedback(self) -> float:
        return self._feedback

    @feedback.setter
    def feedback(self, feedback: float) -> None:
        if not 0.0 <= feedback < 1.0:
            raise ValueError(f"feedback must be in [0, 1), got {feedback!r}")
        self._feedback = float(feedback)

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _schedule(self, strength: float | None = None) -> list[int]:
        n = len(self._alphas)
        return timestep_schedule(
            self._steps, self._strength if strength is None else strength, n, self._lcm_grid
        )

    # -- text --------------------------------------------------------------------------------

    def _token_ids(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        max_length = self.text_encoder.config.max_position_embeddings
        if self.tokenizer is not None:
            ids = self.tokenizer(prompt, truncation=False).input_ids
            max_length = min(max_length, self.tokenizer.model_max_length)
        else:
            # Random weights have no vocabulary: hash words to ids, CLIP's length and layout.
            vocab = self.text_encoder.config.vocab_size
            ids = (
                [vocab - 2]
                + [zlib.crc32(w.encode()) % (vocab - 2) for w in prompt.lower().split()]
                + [vocab - 1]
            )
        if len(ids) > max_length:
            raise PromptTooLongError(
                f"prompt is {len(ids) - 2} tokens long; the text encoder takes at most {max_length - 2}"
            )
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else ids[-1]
        return torch.tensor([ids + [pad] * (max_length - len(ids))], device=self.device)

    @torch.inference_mode()
    def _encode(self, prompt: str) -> torch.Tensor:
        return self.text_encoder(self._token_ids(prompt))[0].to(self.dtype)

    # -- frames ------------------------------------------------------------------------------

    def _buffers_for(self, height: int, width: int) -> _Buffers:
        b = self._buffers
        if b is None or (b.height, b.width) != (height, width):
            b = self._buffers = _Buffers(
                height,
                width,
                self._noise(height, width, MAX_STEPS, self.seed),
                torch.empty((1, 3, height, width), device=self.device, dtype=self.dtype),
            )
            if self.device.type == "cuda":
                b.image = b.image.contiguous(memory_format=torch.channels_last)
            self.similarity.reset()
        return b

    def _noise(self, height: int, width: int, count: int, seed: int) -> torch.Tensor:
        # Drawn on the CPU so a seed gives the same noise on every device.
        generator = torch.Generator().manual_seed(seed)
        shape = (count, LATENT_CHANNELS, height // LATENT_FACTOR, width // LATENT_FACTOR)
        return torch.randn(shape, generator=generator).to(self.device, self.dtype)

    def img2img(self, rgb: np.ndarray) -> np.ndarray:
        """Restyle one RGB uint8 frame (H, W multiples of 8). Returns RGB uint8, same size.

        With `stream_batch` and steps > 1 the result is that of the frame `steps - 1` calls
        earlier (see `_denoise_stream`). A skipped frame (similarity filter) returns the previous
        output object itself: treat outputs as read-only.
        """
        height, width = _check_image(rgb)
        buffers = self._buffers_for(height, width)
        if self.similarity.should_skip(rgb) and buffers.last_output is not None:
            self.frames_skipped += 1
            return buffers.last_output
        clock = StageClock({}, torch.cuda.synchronize if self.device.type == "cuda" else None)
        with torch.inference_mode():
            source = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device, non_blocking=True)
            buffers.image.copy_(source.permute(2, 0, 1).unsqueeze(0))
            buffers.image.div_(127.5).sub_(1.0)
            latent = self.vae.encode(buffers.image).latents * self._vae_scale
            clock.lap("encode")
            if self.stream_batch and self._steps > 1:
                clean = self._denoise_stream(latent, buffers)
            else:
                buffers.pipe = None
                clean = self._denoise(latent, buffers.noise, self._timesteps)
            if self._feedback and buffers.last_latent is not None:
                clean = torch.lerp(clean, buffers.last_latent, self._feedback)
            buffers.last_latent = clean
            clock.lap("unet")
            out = self._decode(clean)
            clock.lap("decode")
        self.timings = clock.laps
        buffers.last_output = out
        self.frames_processed += 1
        return out

    @property
    def lag_frames(self) -> int:
        """Frames between an input and the output made from it (stream batch only)."""
        return self._steps - 1 if self.stream_batch else 0

    def txt2img(self, height: int = 512, width: int = 512, seed: int | None = None) -> np.ndarray:
        """An image of the prompt from pure noise (for the `backdrop` mode): RGB uint8."""
        _check_size(height, width)
        noise = self._noise(height, width, MAX_STEPS, self.seed if seed is None else seed)
        clock = StageClock({}, torch.cuda.synchronize if self.device.type == "cuda" else None)
        with torch.inference_mode():
            clean = self._denoise(None, noise, self._schedule(strength=1.0))
            clock.lap("unet")
            out = self._decode(clean)
            clock.lap("decode")
        self.timings = clock.laps
        return out

    def _denoise(
        self, latent: torch.Tensor | None, noise: torch.Tensor, timesteps: list[int]
    ) -> torch.Tensor:
        """Run the UNet at each timestep; returns the final clean-latent estimate."""
        x = noise[:1] if latent is None else self._add_noise(latent, noise[:1], timesteps[0])
        clean = x
        for i, t in enumerate(timesteps):
            clean = self._step(x, [t], noise[i : i + 1])
            if i + 1 < len(timesteps):
                x = self._add_noise(clean, noise[i + 1 : i + 2], timesteps[i + 1])
        return clean

    def _denoise_stream(self, latent: torch.Tensor, buffers: "_Buffers") -> torch.Tensor:
        """Stream batch: one UNet call denoises this frame's first step together with the later
        steps of the `steps - 1` frames before it, each at its own timestep.

        Every frame still gets exactly the steps it would get alone (same noise, same timesteps),
        so the output equals the unbatched output of the frame `steps - 1` calls earlier; until
        the pipe is full the oldest frame in it is returned at the step it has reached.
        """
        timesteps, noise = self._timesteps, buffers.noise
        x = self._add_noise(latent, noise[:1], timesteps[0])
        pipe = buffers.pipe
        if pipe is not None and pipe.shape[0] < len(timesteps):  # else steps shrank: start over
            x = torch.cat([x, pipe])
        clean = self._step(x, timesteps[: x.shape[0]], noise[: x.shape[0]])
        # Re-noise all but the last to their next timestep: they wait in the pipe for the next call.
        keep = min(x.shape[0], len(timesteps) - 1)
        buffers.pipe = torch.cat(
            [self._add_noise(clean[i : i + 1], noise[i + 1 : i + 2], timesteps[i + 1]) for i in range(keep)]
        )
        return clean[-1:]

    def _step(self, x: torch.Tensor, timesteps: list[int], stock: torch.Tensor) -> torch.Tensor:
        """One UNet call over a batch, element i at timesteps[i] and made with noise stock[i];
        returns clean estimates."""
        n = x.shape[0]
        t_in = torch.tensor(timesteps, device=self.device, dtype=torch.long)
        embeddings = self._embeddings.expand(n, -1, -1)
        model_out = self.unet(x, t_in, encoder_hidden_states=embeddings, return_dict=False)[0]
        if self._guidance != 1.0 and self._prediction == "epsilon":
            model_out = stock + self._guidance * (model_out - stock)
        return torch.cat([self._clean(x[i : i + 1], model_out[i : i + 1], t) for i, t in enumerate(timesteps)])

    def _add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = float(self._alphas[t])
        return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise

    def _clean(self, x: torch.Tensor, model_out: torch.Tensor, t: int) -> torch.Tensor:
        a = float(self._alphas[t])
        sa, sb = math.sqrt(a), math.sqrt(1.0 - a)
        if self._prediction == "v_prediction":
            x0 = sa * x - sb * model_out
        else:
            x0 = (x - sb * model_out) / sa
        if self.family == "lcm":
            c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition_discrete(t)
            x0 = float(c_skip) * x + float(c_out) * x0
        return x0

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        image = self.vae.decode(latent / self._vae_scale).sample[0]
        image = ((image.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return image.permute(1, 2, 0).contiguous().cpu().numpy()


def _load_weights(model_id: str, taesd_id: str, lora_id: str | None, dtype: torch.dtype):
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    mid = model_id
    text_encoder = _load(
        "text encoder", mid, lambda: CLIPTextModel.from_pretrained(mid, subfolder="text_encoder", dtype=dtype)
    )
    tokenizer = _load("tokenizer", mid, lambda: _tokenizer(CLIPTokenizer, mid))
    unet = _load(
        "UNet", mid, lambda: UNet2DConditionModel.from_pretrained(mid, subfolder="unet", torch_dtype=dtype)
    )
    # Only the beta schedule and prediction type are read from the repo's scheduler config
    # (sd-turbo ships an Euler one); LCMScheduler gives alphas_cumprod and LCM's scalings.
    scheduler = _load("scheduler config", mid, lambda: LCMScheduler.from_pretrained(mid, subfolder="scheduler"))
    vae = _load("TAESD VAE", taesd_id, lambda: AutoencoderTiny.from_pretrained(taesd_id, torch_dtype=dtype))
    if lora_id:
        _fuse_lora(unet, lora_id)
    return unet, vae, text_encoder, tokenizer, scheduler


def _fuse_lora(unet, lora_id: str) -> None:
    """Merge a LoRA (diffusers, PEFT or kohya layout) into the UNet's weights: no runtime cost."""
    from diffusers import StableDiffusionPipeline

    # The pipeline's class method only reads and converts the state dict (kohya -> PEFT
    # names); nothing of a pipeline is built.
    state, alphas = _load("LoRA", lora_id, lambda: StableDiffusionPipeline.lora_state_dict(lora_id))
    unet.load_lora_adapter(state, prefix="unet", network_alphas=alphas, adapter_name="stream")
    unet.fuse_lora(lora_scale=1.0)
    unet.unload_lora()


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % LATENT_FACTOR or width % LATENT_FACTOR:
        raise ValueError(f"image size must be positive multiples of {LATENT_FACTOR}, got {height}x{width}")


def _check_image(rgb: np.ndarray) -> tuple[int, int]:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an RGB uint8 array of shape (H, W, 3)")
    _check_size(*rgb.shape[:2])
    return rgb.shape[0], rgb.shape[1]


def _tokenizer(cls, model_id: str):
    tokenizer = cls.from_pretrained(model_id, subfolder="tokenizer")
    # transformers 5 quietly builds a 3-token tokenizer when the vocabulary files are missing.
    if len(tokenizer) <= 3:
        raise OSError("no vocabulary found (tokenizer/vocab.json + merges.txt, or tokenizer.json)")
    return tokenizer


def _load(what: str, model_id: str, loader: Callable[[], T]) -> T:
    """Call a `from_pretrained`, turning "not found" into one message that says what to do."""
    try:
        return loader()
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        local = Path(model_id).is_absolute() or model_id.startswith(".") or Path(model_id).exists()
        get = (
            f"Fill that folder with `huggingface-cli download <hub id> --local-dir {model_id}`"
            if local
            else f"Get the weights with `huggingface-cli download {model_id}` (or `hf download {model_id}`)"
        )
        raise ModelNotFoundError(
            f"could not load the {what} of {model_id!r}: {exc}\n"
            f"{get} on a machine with network access{' (HF_HUB_OFFLINE is set here)' if offline else ''}; "
            "a local folder must be laid out like the hub repo (unet/, text_encoder/, tokenizer/, "
            "scheduler/; TAESD in its own folder). "
            "To time the architecture without weights, use --random-weights."
        ) from exc


# -- full-size sd-turbo architecture with random weights (benchmarks: latency does not depend
#    on weight values). The numbers are those of SD 2.1-base, which sd-turbo is distilled from.


def _random_sd_turbo():
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=512,
        )
    )
    vae = AutoencoderTiny()  # diffusers' defaults are TAESD for SD 1.x / 2.x
    scheduler = LCMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return unet, vae, text_encoder, scheduler
