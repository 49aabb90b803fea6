"""Diffusion weights for the `diffusion` effect: the model families camfx serves and how they load.

Two families, both loaded with diffusers / transformers `from_pretrained` (a hub id or a local
folder laid out like the hub repo; HF_HUB_OFFLINE / HF_HOME are honoured by huggingface_hub):

- `turbo` (default): `stabilityai/sd-turbo` (UNet, CLIP text encoder, tokenizer, scheduler
  config) with `madebyollin/taesd` as the VAE. Adversarially distilled; no classifier-free
  guidance, so one UNet call per step.
- `lcm`: an SD 1.5 base (`stable-diffusion-v1-5/stable-diffusion-v1-5`) with the LCM-LoRA
  `latent-consistency/lcm-lora-sdv1-5` fused into the UNet at load time (needs `peft`), also with
  TAESD and no guidance.

`random_weights` builds the full-size sd-turbo architecture untrained: latency does not depend
on weight values, so benchmarks time it without a download. The sampler and the streaming loop
that use these weights are camfx.engine.diffusion.stylizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

from .registry import SD_TURBO, TAESD

LATENT_FACTOR = 8  # TAESD and the SD VAE downscale by 8
LATENT_CHANNELS = 4

T = TypeVar("T")


class ModelNotFoundError(OSError):
    """Weights could not be loaded; the message says which and how to get them."""


@dataclass
class DiffusionParts:
    """Loaded weights, shareable between streams (they are only read)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object | None  # None for random weights: the stylizer hashes words to ids
    scheduler: object
    family: str  # "turbo" or "lcm"
    model_id: str
    device: torch.device
    dtype: torch.dtype


def load_parts(
    model_id: str = SD_TURBO,
    *,
    taesd_id: str = TAESD,
    lora_id: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
) -> DiffusionParts:
    """Load (or, with random_weights, build) a model family onto `device` (see the module doc).
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
