"""Tiny diffusion models saved like hub repos, for offline tests (random weights, seconds)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

MAX_TOKENS = 16


def _write_tokenizer(folder) -> int:
    """A CLIP BPE tokenizer over lowercase letters, digits and a few merges; returns vocab size."""
    folder.mkdir(parents=True)
    chars = string.ascii_lowercase + string.digits + ".,!'"
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_TOKENS}))
    return len(vocab)


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )


def tiny_taesd():
    from diffusers import AutoencoderTiny

    torch.manual_seed(1)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )


def build_tiny_repo(root: Path) -> tuple[str, str]:
    """(model folder, TAESD folder) laid out like stabilityai/sd-turbo and madebyollin/taesd."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    repo, taesd = root / "sd-tiny", root / "taesd-tiny"
    vocab_size = _write_tokenizer(repo / "tokenizer")
    torch.manual_seed(2)
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
        )
    ).save_pretrained(repo / "text_encoder")
    tiny_unet().save_pretrained(repo / "unet")
    # sd-turbo ships an Euler scheduler config; the stylizer only reads its betas from it.
    EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    ).save_pretrained(repo / "scheduler")
    tiny_taesd().save_pretrained(taesd)
    return str(repo), str(taesd)
