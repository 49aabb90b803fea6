"""Tiny random diffusion models saved as local folders laid out like the hub repos, so that
`camfx bench diffusion --model FOLDER --taesd FOLDER` runs in seconds on a CPU without a download
(bench/gpu_check.sh --dry-run). The pictures are noise; only the code path is exercised.

    python -m camfx.bench.tiny_models OUT_DIR     prints the model folder and the TAESD folder
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

TOKENS = 77  # CLIP's context length, so the default prompt fits even one character a token


def _tokenizer(folder: Path) -> int:
    """A CLIP BPE vocabulary of single characters (no merges): every word splits into its
    letters. Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + ".,!?'-"
    vocab: dict[str, int] = {}
    for c in chars:  # a character inside a word, and one that ends it
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": TOKENS}))
    return len(vocab)


def build(root: Path) -> tuple[Path, Path]:
    """(model folder with unet/, text_encoder/, tokenizer/, scheduler/; TAESD folder) under root."""
    import torch
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    model, taesd = Path(root) / "sd-tiny", Path(root) / "taesd-tiny"
    vocab = _tokenizer(model / "tokenizer")
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=TOKENS, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
    )).save_pretrained(model / "text_encoder")
    # Two levels, one with cross-attention: the blocks sd-turbo's UNet is made of, at toy width.
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(model / "unet")
    # camfx reads only the beta schedule (sd-turbo ships an Euler config); an LCM one with
    # steps_offset 1 spares the "config is outdated" warnings of diffusers' pipelines.
    LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1).save_pretrained(model / "scheduler")
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
    ).save_pretrained(taesd)
    return model, taesd


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m camfx.bench.tiny_models OUT_DIR", file=sys.stderr)
        return 2
    model, taesd = build(Path(argv[0]))
    print(model)
    print(taesd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
