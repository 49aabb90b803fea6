"""Few-step diffusion stylization of a live stream (the core of the `diffusion` effect).

`Stylizer` turns one RGB frame into a restyled one with 1 to 4 UNet calls, after the idea
of StreamDiffusion (Kodaira et al., 2023), written for this engine:

    frame -> TAESD encoder -> add fixed noise at t0 -> UNet (1..4 steps) -> TAESD decoder -> frame

The weights (`DiffusionParts`, camfx.models.diffusion) are shared between streams; each stream
has its own `Stylizer` (prompt embeddings, fixed noise, buffers). `img2img_batch` restyles
several streams' frames (one model, one picture size) with one TAESD encode, one UNet call per
denoising round and one decode; `Stylizer.img2img` is that batch with one stream in it. It calls three plain callables,
`Networks` (unet, encode, decode): torch modules by default, or runtimes where
`camfx export engines --diffusion` exported these weights (camfx.engine.diffusion.networks).

Sampler (`Sampler`, camfx.engine.diffusion.sampler). Both families predict noise (epsilon, or v
where the scheduler config says so; another prediction type is refused). One step turns the noisy
latent x_t into a clean estimate x0; the next step re-noises x0 to the next, smaller timestep with
the *same* per-stream noise. That is what sd-turbo's Euler sampler does with "trailing"
timesteps, and what LCM's multistep sampler does (with its boundary-condition weights for the
`lcm` family). The sampler's coefficients are stacked per timestep once and gathered per batch
element, so one vectorised step serves a batch whose elements sit at different timesteps.

Timesteps. `steps` (1..4) and `strength` (0 < s <= 1, how far the frame is pushed from the
camera picture) give `timestep_schedule` (camfx.engine.diffusion.sampler).

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

Not thread-safe: one instance per stream, used from the device's diffusion thread.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from camfx.models.diffusion import LATENT_CHANNELS, LATENT_FACTOR, DiffusionParts, load_parts
from camfx.models.registry import LCM_LORA, SD15, SD_TURBO, TAESD

from ..media.stage_clock import StageClock
from .networks import Networks, torch_networks
from .sampler import MAX_STEPS, Sampler, check_steps, check_strength
from .similarity import SimilarityFilter


class PromptTooLongError(ValueError):
    """The prompt has more tokens than the text encoder takes."""


@dataclass
class _Buffers:
    """Per-resolution state, allocated once when the resolution is first seen."""

    height: int
    width: int
    noise: torch.Tensor  # [MAX_STEPS, 4, h/8, w/8]: one fixed noise per step
    last_latent: torch.Tensor | None = None
    last_output: np.ndarray | None = None
    pipe: torch.Tensor | None = None  # stream batch: earlier frames' latents between steps


class Stylizer:
    """img2img for a live stream and txt2img for backdrops; see the module docstring.

    parts: loaded weights (shared between streams). networks: the callables that run them (torch
    by default). prompt, steps (1..4), strength (0, 1], feedback [0, 1), stream_batch, guidance:
    live, settable attributes. seed: the per-stream noise. similarity_threshold: 0 = filter off;
    StreamDiffusion uses 0.98. max_skips: most frames skipped in a row.
    """

    def __init__(
        self,
        parts: DiffusionParts,
        networks: Networks | None = None,
        *,
        prompt: str = "",
        steps: int = 1,
        strength: float = 0.5,
        seed: int = 0,
        similarity_threshold: float = 0.0,
        max_skips: int = 10,
        feedback: float = 0.0,
        stream_batch: bool = False,
        guidance: float = 1.0,
    ):
        self.parts = parts
        self.networks = networks or torch_networks(parts)
        self.text_encoder, self.tokenizer, self.scheduler = parts.text_encoder, parts.tokenizer, parts.scheduler
        self.device, self.dtype, self.family, self.model_id = parts.device, parts.dtype, parts.family, parts.model_id
        self._seed = seed
        self.sampler = Sampler(self.scheduler, self.family, self.device, self.dtype)
        self._vae_scale = float(parts.vae.config.get("scaling_factor", 1.0))
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
    def from_pretrained(
        cls,
        model_id: str = SD_TURBO,
        *,
        taesd_id: str = TAESD,
        lora_id: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        random_weights: bool = False,
        **settings,
    ) -> "Stylizer":
        """Load the weights (hub ids or folders; see camfx.models.diffusion) and make a stylizer
        with `settings` (the live attributes)."""
        parts = load_parts(model_id, taesd_id=taesd_id, lora_id=lora_id, device=device, dtype=dtype,
                           random_weights=random_weights)
        return cls(parts, **settings)

    @classmethod
    def lcm_lora(cls, model_id: str = SD15, lora_id: str = LCM_LORA, **kwargs) -> "Stylizer":
        """SD 1.5 (or another SD 1.x base) with the LCM-LoRA fused in."""
        return cls.from_pretrained(model_id, lora_id=lora_id, **kwargs)

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

    def _schedule(self) -> list[int]:
        return self.sampler.schedule(self._steps, self._strength)

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
            b = self._buffers = _Buffers(height, width, self._noise(height, width, MAX_STEPS, self.seed))
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
        earlier (see `img2img_batch`). A skipped frame (similarity filter) returns the previous
        output object itself: treat outputs as read-only.
        """
        return img2img_batch([self], [rgb])[0]

    @property
    def lag_frames(self) -> int:
        """Frames between an input and the output made from it (stream batch only)."""
        return self._steps - 1 if self.stream_batch else 0

    def txt2img(self, height: int = 512, width: int = 512, seed: int | None = None) -> np.ndarray:
        """An image of the prompt from pure noise (for the `backdrop` mode): RGB uint8."""
        _check_size(height, width)
        noise = self._noise(height, width, MAX_STEPS, self.seed if seed is None else seed)
        timesteps = self.sampler.schedule(self._steps, 1.0)
        clock = StageClock({}, torch.cuda.synchronize if self.device.type == "cuda" else None)
        with torch.inference_mode():
            x = clean = noise[:1]
            for i, t in enumerate(timesteps):
                t_in = torch.tensor([t], device=self.device)
                out = self.networks.unet(x, t_in, self._embeddings)
                clean = self.sampler.step(x, out, t_in, noise[i : i + 1], self._guidance_tensor(1))
                if i + 1 < len(timesteps):
                    x = self.sampler.add_noise(clean, noise[i + 1 : i + 2], t_in.new_tensor([timesteps[i + 1]]))
            clock.lap("unet")
            out = _decode(self, clean)[0]
            clock.lap("decode")
        self.timings = clock.laps
        return out

    def _guidance_tensor(self, count: int) -> torch.Tensor:
        return torch.full((count,), self._guidance, device=self.device)


@dataclass
class _Lane:
    """One stream's elements in the batch's UNet calls: `x` at step indices `steps` of its
    schedule; a stream batch is done after one call, sequential steps after `len(timesteps)`."""

    stylizer: Stylizer
    buffers: _Buffers
    x: torch.Tensor
    steps: list[int]
    clean: torch.Tensor | None = None


def img2img_batch(stylizers: list[Stylizer], rgbs: list[np.ndarray]) -> list[np.ndarray]:
    """Restyle one frame per stylizer (streams sharing one model's weights and one picture size)
    with one TAESD encode, one UNet call per denoising round and one TAESD decode for all of them.

    Each stream keeps what it has alone: its prompt embedding, fixed noise, timesteps (steps,
    strength), guidance, similarity filter, latent feedback and stream batch; a round's UNet call
    holds every stream still denoising, each element at its own timestep. Per stream, the result
    equals `img2img_batch([stylizer], [rgb])` up to float rounding of the batched kernels.
    """
    if len(stylizers) != len(rgbs) or not stylizers:
        raise ValueError("one frame per stylizer, at least one")
    first = stylizers[0]
    sizes = {_check_image(rgb) for rgb in rgbs}
    if len(sizes) > 1:
        raise ValueError(f"a batch is one picture size, got {sorted(sizes)}")
    if any(s.networks is not first.networks for s in stylizers):
        raise ValueError("a batch is one model: every stylizer must share the same networks")
    height, width = sizes.pop()
    results: list[np.ndarray | None] = [None] * len(stylizers)
    todo = []
    for i, (stylizer, rgb) in enumerate(zip(stylizers, rgbs)):
        buffers = stylizer._buffers_for(height, width)
        if stylizer.similarity.should_skip(rgb) and buffers.last_output is not None:
            stylizer.frames_skipped += 1
            results[i] = buffers.last_output
        else:
            todo.append(i)
    if not todo:
        return results
    device, dtype = first.device, first.dtype
    clock = StageClock({}, torch.cuda.synchronize if device.type == "cuda" else None)
    with torch.inference_mode():
        images = torch.from_numpy(np.stack([rgbs[i] for i in todo])).to(device, non_blocking=True)
        images = images.permute(0, 3, 1, 2).to(dtype).div_(127.5).sub_(1.0)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        latents = first.networks.encode(images) * first._vae_scale
        clock.lap("encode")
        lanes = [_lane(stylizers[i], latents[k : k + 1]) for k, i in enumerate(todo)]
        _denoise(first, lanes)
        for lane in lanes:
            s, b = lane.stylizer, lane.buffers
            if s.feedback and b.last_latent is not None:
                lane.clean = torch.lerp(lane.clean, b.last_latent, s.feedback)
            b.last_latent = lane.clean
        clock.lap("unet")
        outs = _decode(first, torch.cat([lane.clean for lane in lanes]))
        clock.lap("decode")
    for i, lane, out in zip(todo, lanes, outs):
        lane.stylizer.timings = dict(clock.laps)
        lane.buffers.last_output = results[i] = out
        lane.stylizer.frames_processed += 1
    return results


def _lane(stylizer: Stylizer, latent: torch.Tensor) -> _Lane:
    b, timesteps = stylizer._buffers, stylizer._timesteps
    t0 = torch.tensor([timesteps[0]], device=stylizer.device)
    x = stylizer.sampler.add_noise(latent, b.noise[:1], t0)
    if stylizer.stream_batch and len(timesteps) > 1:
        # Stream batch: this frame's first step with the later steps of the frames before it.
        if b.pipe is not None and b.pipe.shape[0] < len(timesteps):  # else steps shrank: start over
            x = torch.cat([x, b.pipe])
        return _Lane(stylizer, b, x, list(range(x.shape[0])))
    b.pipe = None
    return _Lane(stylizer, b, x, [0])


def _denoise(first: Stylizer, lanes: list[_Lane]) -> None:
    """Run the rounds of UNet calls until every lane has its clean latent."""
    sampler, device = first.sampler, first.device
    active = list(lanes)
    while active:
        x = torch.cat([lane.x for lane in active])
        t = torch.tensor([lane.stylizer._timesteps[i] for lane in active for i in lane.steps], device=device)
        noise = torch.cat([lane.buffers.noise[lane.steps] for lane in active])
        embeddings = torch.cat([lane.stylizer.embeddings.expand(len(lane.steps), -1, -1) for lane in active])
        guidance = torch.tensor([lane.stylizer.guidance for lane in active for _ in lane.steps], device=device)
        clean = sampler.step(x, first.networks.unet(x, t, embeddings), t, noise, guidance)
        still, offset = [], 0
        for lane in active:
            mine = clean[offset : offset + len(lane.steps)]
            offset += len(lane.steps)
            if _advance(lane, mine):
                still.append(lane)
        active = still


def _advance(lane: _Lane, clean: torch.Tensor) -> bool:
    """Take a round's clean estimates; True while the lane has more rounds to go."""
    s, b = lane.stylizer, lane.buffers
    timesteps, device = s._timesteps, s.device
    if len(lane.steps) > 1 or (s.stream_batch and len(timesteps) > 1):
        # Stream batch: all but the last wait in the pipe, re-noised to their next timestep.
        keep = min(len(lane.steps), len(timesteps) - 1)
        nxt = torch.tensor([timesteps[i + 1] for i in range(keep)], device=device)
        b.pipe = s.sampler.add_noise(clean[:keep], b.noise[1 : keep + 1], nxt)
        lane.clean = clean[-1:]
        return False
    step = lane.steps[0] + 1
    if step >= len(timesteps):
        lane.clean = clean
        return False
    lane.x = s.sampler.add_noise(clean, b.noise[step : step + 1], torch.tensor([timesteps[step]], device=device))
    lane.steps = [step]
    return True


def _decode(first: Stylizer, latents: torch.Tensor) -> list[np.ndarray]:
    images = first.networks.decode(latents / first._vae_scale)
    images = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return list(images.permute(0, 2, 3, 1).contiguous().cpu().numpy())


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0 or height % LATENT_FACTOR or width % LATENT_FACTOR:
        raise ValueError(f"image size must be positive multiples of {LATENT_FACTOR}, got {height}x{width}")


def _check_image(rgb: np.ndarray) -> tuple[int, int]:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an RGB uint8 array of shape (H, W, 3)")
    _check_size(*rgb.shape[:2])
    return rgb.shape[0], rgb.shape[1]
