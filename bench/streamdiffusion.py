"""The reference for `camfx bench diffusion`: the `streamdiffusion` package run on our weights.

StreamDiffusion (PyPI `streamdiffusion` 0.1.1) is driven on the very modules camfx loaded (UNet,
TAESD, text encoder: same weights, dtype, device and picture size), so the two are timed on equal
terms in one process. Its declared dependencies pin diffusers 0.24; it imports and runs with
the diffusers camfx uses, so it is installed without them: `pip install --no-deps
streamdiffusion==0.1.1`.

Its `__call__` times itself with CUDA events, so on a CPU (the tests) the same three steps it
runs (encode, denoise, decode) are called directly; on CUDA its own `__call__` is used.
"""

from __future__ import annotations

import importlib.util

import numpy as np

GRID = 50  # StreamDiffusion's LCM timestep grid (its examples use 50 inference steps)


def available() -> bool:
    return importlib.util.find_spec("streamdiffusion") is not None


def version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("streamdiffusion")
    except importlib.metadata.PackageNotFoundError:
        return None


def t_index_list(steps: int, strength: float) -> list[int]:
    """Indices on the 50-step grid that start where `strength` starts camfx's schedule."""
    start = min(int(round(GRID * (1.0 - strength))), GRID - steps)
    span = GRID - start
    return [start + i * span // steps for i in range(steps)]


class Reference:
    """`img2img(rgb uint8 HxWx3) -> uint8 HxWx3` through StreamDiffusion, like
    `Stylizer.img2img`. denoising_batch: its stream batch (the name it gives it)."""

    def __init__(self, parts, embeddings, size: int, steps: int, strength: float, denoising_batch: bool):
        import torch
        from diffusers import StableDiffusionPipeline
        from streamdiffusion import StreamDiffusion

        self._torch = torch
        pipe = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            scheduler=parts.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        # The prompt is encoded once, in prepare(); random weights come without a tokenizer, so it
        # gets camfx's embeddings of the same prompt.
        pipe.encode_prompt = lambda **kwargs: (embeddings, None)
        self.stream = StreamDiffusion(
            pipe, t_index_list=t_index_list(steps, strength), torch_dtype=parts.dtype, width=size, height=size,
            use_denoising_batch=denoising_batch, cfg_type="none",
        )
        self.stream.prepare("", num_inference_steps=GRID, guidance_scale=1.0)
        self._cuda = parts.device.type == "cuda"

    def img2img(self, rgb: np.ndarray) -> np.ndarray:
        import PIL.Image

        torch, stream = self._torch, self.stream
        image = PIL.Image.fromarray(rgb)
        with torch.no_grad():
            if self._cuda:
                out = stream(image)
            else:  # what __call__ does, less its CUDA-event timer
                x = stream.image_processor.preprocess(image, stream.height, stream.width)
                latent = stream.encode_image(x.to(device=stream.device, dtype=stream.dtype))
                out = stream.decode_image(stream.predict_x0_batch(latent))
        picture = ((out[0].clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return picture.permute(1, 2, 0).contiguous().cpu().numpy()
