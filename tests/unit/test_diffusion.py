"""The diffusion stylizer core on tiny models: offline, CPU, seconds.

Tiny networks are built from config dicts, saved with `save_pretrained` in the layout of a hub
repo (unet/, text_encoder/, tokenizer/, scheduler/, TAESD in its own folder) and loaded through
the same `from_pretrained` path users hit. Weight values are random: the tests check plumbing
and determinism, not pictures.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from camfx.engine.diffusion.sampler import timestep_schedule
from camfx.engine.diffusion.similarity import SimilarityFilter
from camfx.engine.diffusion.stylizer import PromptTooLongError, Stylizer
from camfx.engine.effects import compose as dc
from camfx.engine.media import yuv
from camfx.models.diffusion import ModelNotFoundError

from ..tiny_diffusion import MAX_TOKENS, tiny_taesd, tiny_unet

pytestmark = pytest.mark.unit

SIZE = 64  # image side: latents are 8x8, the tiny UNet's sample size




def _stylizer(tiny_repo, **kwargs) -> Stylizer:
    repo, taesd = tiny_repo
    kwargs.setdefault("prompt", "a cat")
    return Stylizer.from_pretrained(repo, taesd_id=taesd, **kwargs)


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_loads_and_restyles_deterministically(tiny_repo):
    a = _stylizer(tiny_repo, seed=7, steps=2)
    b = _stylizer(tiny_repo, seed=7, steps=2)
    frame = _texture()
    out = a.img2img(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out, b.img2img(frame))
    assert np.array_equal(out, a.img2img(frame.copy()))  # fixed per-stream noise: same in, same out
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert not np.array_equal(out, _stylizer(tiny_repo, seed=8, steps=2).img2img(frame))


def test_prompt_change_reencodes_without_reloading(tiny_repo):
    s = _stylizer(tiny_repo)
    unet, text_encoder, frame = s.parts.unet, s.text_encoder, _texture()
    before = s.img2img(frame)
    embeddings = s.embeddings
    s.prompt = "a cat"  # unchanged: nothing recomputed
    assert s.embeddings is embeddings
    s.prompt = "a dog"
    after = s.img2img(frame)
    assert s.parts.unet is unet and s.text_encoder is text_encoder
    assert not torch.equal(s.embeddings, embeddings)
    assert not np.array_equal(before, after)
    s.prompt = ""  # empty is allowed: the unconditional embedding
    assert s.img2img(frame).shape == frame.shape


def test_steps_strength_and_timesteps(tiny_repo):
    assert timestep_schedule(1, 0.5) == [499]
    assert timestep_schedule(4, 1.0) == [999, 749, 499, 249]
    assert all(t % 20 == 19 for t in timestep_schedule(3, 0.7, lcm_grid=50))
    s = _stylizer(tiny_repo, steps=1, strength=0.5)
    s.steps, s.strength = 3, 1.0
    assert s.timesteps == [999, 666, 332]
    for bad in (0, 5, 2.0):
        with pytest.raises(ValueError, match="steps"):
            s.steps = bad
        with pytest.raises(ValueError, match="steps"):
            _stylizer(tiny_repo, steps=bad)
    with pytest.raises(ValueError, match="strength"):
        s.strength = 0.0
    assert s.steps == 3  # a rejected value changes nothing


def test_prompt_too_long_is_rejected_and_keeps_the_old_prompt(tiny_repo):
    s = _stylizer(tiny_repo)
    with pytest.raises(PromptTooLongError, match=f"prompt is 40 tokens long.*at most {MAX_TOKENS - 2}"):
        s.prompt = " ".join(["cat"] * 40)
    assert s.prompt == "a cat"


def test_unknown_model_names_the_model_and_the_ways_out(tiny_repo, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError) as info:
        Stylizer.from_pretrained(missing, taesd_id=tiny_repo[1])
    message = str(info.value)
    assert missing in message and "huggingface-cli download" in message and "--random-weights" in message
    with pytest.raises(ModelNotFoundError, match="TAESD.*nobody/no-such-taesd"):
        Stylizer.from_pretrained(tiny_repo[0], taesd_id="nobody/no-such-taesd")
    # A folder without its tokenizer files (transformers alone would build an empty tokenizer).
    partial = tmp_path / "partial"
    shutil.copytree(tiny_repo[0], partial, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(ModelNotFoundError, match="tokenizer.*partial.*no vocabulary"):
        Stylizer.from_pretrained(str(partial), taesd_id=tiny_repo[1])


def test_similarity_filter_skips_static_input_not_moving_input(tiny_repo):
    s = _stylizer(tiny_repo, similarity_threshold=0.95, max_skips=3)
    frame = _texture()
    first = s.img2img(frame)
    assert s.img2img(frame.copy()) is first  # identical: skip probability 1
    assert s.frames_skipped == 1
    moved = np.roll(frame, 8, axis=1)
    assert s.img2img(moved) is not first and s.frames_processed == 2
    # At most max_skips in a row, then a refresh even on a static scene.
    results = [s.img2img(moved) for _ in range(4)]
    assert s.frames_skipped == 1 + 3 and s.frames_processed == 3
    assert results[-1] is not results[0]


def test_similarity_filter_probability_rises_with_similarity():
    base = _texture().astype(np.int16)
    noise = np.random.default_rng(1).integers(-40, 41, base.shape)
    near = np.clip(base + noise // 8, 0, 255).astype(np.uint8)
    far = np.clip(base + noise, 0, 255).astype(np.uint8)

    def skips(frame) -> int:
        f, count = SimilarityFilter(threshold=0.9, seed=0), 0
        for _ in range(200):
            f.reset()
            f.should_skip(base.astype(np.uint8))  # the last processed frame
            count += f.should_skip(frame)
        return count

    assert skips(far) < skips(near) < 200


def test_feedback_blends_with_the_previous_frame(tiny_repo):
    a, b = _texture(0), _texture(1)
    plain = _stylizer(tiny_repo).img2img(b)
    s = _stylizer(tiny_repo, feedback=0.5)
    s.img2img(a)
    assert not np.array_equal(s.img2img(b), plain)
    with pytest.raises(ValueError, match="feedback"):
        s.feedback = 1.0


@pytest.mark.parametrize("steps", [2, 3])
def test_stream_batch_gives_the_unbatched_output_steps_minus_one_frames_later(tiny_repo, steps):
    frames = [_texture(i) for i in range(5)]
    plain = _stylizer(tiny_repo, steps=steps, strength=0.9)
    batched = _stylizer(tiny_repo, steps=steps, strength=0.9, stream_batch=True)
    expected = [plain.img2img(f) for f in frames]
    got = [batched.img2img(f) for f in frames]
    lag = batched.lag_frames
    assert lag == steps - 1 and plain.lag_frames == 0
    for i in range(lag, len(frames)):
        # Same noise, same timesteps, one UNet batch: equal up to batched float rounding.
        assert np.abs(got[i].astype(int) - expected[i - lag].astype(int)).max() <= 1, i
        assert not np.array_equal(got[i], expected[i]), "the batch should lag, not repeat the plain output"
    assert set(batched.timings) == {"encode", "unet", "decode"}


def test_self_negative_guidance_is_off_at_1_and_changes_the_picture_above(tiny_repo):
    frame = _texture(3)
    plain = _stylizer(tiny_repo, steps=2).img2img(frame)
    assert np.array_equal(_stylizer(tiny_repo, steps=2, guidance=1.0).img2img(frame), plain)
    guided = _stylizer(tiny_repo, steps=2, guidance=2.0)
    out = guided.img2img(frame)
    assert not np.array_equal(out, plain)
    assert np.array_equal(_stylizer(tiny_repo, steps=2, guidance=2.0).img2img(frame), out)  # deterministic
    with pytest.raises(ValueError, match="guidance"):
        guided.guidance = 0.5


def test_compiled_unet_gives_the_eager_pictures(tiny_repo):
    """torch.compile on the CPU (CUDA graphs are its CUDA mode, not runnable here): same pictures."""
    import dataclasses

    from camfx.models.diffusion import compile_unet, load_parts

    repo, taesd = tiny_repo
    frame = _texture(4)
    eager = _stylizer(tiny_repo).img2img(frame)
    parts = load_parts(repo, taesd_id=taesd, device="cpu")
    parts = dataclasses.replace(parts, unet=compile_unet(parts.unet, parts.device))
    compiled = Stylizer(parts, prompt="a cat").img2img(frame)
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1


def test_seed_change_draws_new_noise(tiny_repo):
    s = _stylizer(tiny_repo)
    first = s.img2img(_texture(0))
    s.seed = 1
    assert not np.array_equal(s.img2img(_texture(0)), first)
    s.seed = 0
    assert np.array_equal(s.img2img(_texture(0)), first)


def test_txt2img_and_bad_images(tiny_repo):
    s = _stylizer(tiny_repo, steps=2)
    image = s.txt2img(SIZE, 2 * SIZE)
    assert image.shape == (SIZE, 2 * SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image, s.txt2img(SIZE, 2 * SIZE))
    assert not np.array_equal(image, s.txt2img(SIZE, 2 * SIZE, seed=1))
    with pytest.raises(ValueError, match="multiples of 8"):
        s.img2img(np.zeros((60, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        s.img2img(np.zeros((64, 64), np.float32))


def test_lcm_lora_is_fused_into_the_unet(tiny_repo, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    unet = tiny_unet()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(3)
    for name, p in unet.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it do something
            p.data.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(unet))

    lcm = Stylizer.lcm_lora(tiny_repo[0], lora_id=str(tmp_path), taesd_id=tiny_repo[1], prompt="a cat")
    assert lcm.family == "lcm" and all(t % 20 == 19 for t in lcm.timesteps)
    assert not any("lora" in name for name, _ in lcm.parts.unet.named_parameters())  # fused, not wrapped
    base = _stylizer(tiny_repo)
    changed = [k for k, v in lcm.parts.unet.state_dict().items() if not torch.equal(v, base.parts.unet.state_dict()[k])]
    assert changed and all("attn" in k for k in changed)
    assert lcm.img2img(_texture()).shape == (SIZE, SIZE, 3)


# -- compositing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    """A 96x128 camera frame, a stylized picture at another resolution, a mask with a hard person."""
    rng = np.random.default_rng(0)
    frame = yuv.from_rgb(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    stylized = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = np.zeros((48, 64), np.float32)  # half resolution, as masks come
    alpha[8:40, 16:40] = 1.0
    alpha[8:40, 40:44] = 0.5  # a soft edge
    return frame, stylized, alpha


def _full_and_half(alpha: np.ndarray, frame: np.ndarray, value: float):
    """Where the mask is exactly `value` for each I420 plane (nearest scaling: no blending)."""
    import cv2

    h, w = yuv.frame_size(frame)
    full = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_NEAREST)
    half = cv2.resize(alpha, (w // 2, h // 2), interpolation=cv2.INTER_NEAREST)
    # Stay one pixel inside each region: linear scaling blends across the border.
    erode = lambda m: cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # noqa: E731
    return [erode(full == value), erode(half == value), erode(half == value)]


@pytest.mark.parametrize("mode", ["background", "backdrop"])
def test_background_modes_keep_the_person_exactly(scene, mode):
    frame, stylized, alpha = scene
    out = dc.compose(mode, frame, stylized, alpha)
    assert out.shape == frame.shape and out.dtype == np.uint8
    for plane_out, plane_in, where in zip(
        yuv.planes(out), yuv.planes(frame), _full_and_half(alpha, frame, 1.0)
    ):
        assert where.any() and np.array_equal(plane_out[where], plane_in[where])
    outside = _full_and_half(alpha, frame, 0.0)[0]
    assert not np.array_equal(yuv.planes(out)[0][outside], yuv.planes(frame)[0][outside])


def test_person_mode_keeps_the_background_exactly(scene):
    frame, stylized, alpha = scene
    out = dc.compose("person", frame, stylized, alpha)
    for plane_out, plane_in, where in zip(
        yuv.planes(out), yuv.planes(frame), _full_and_half(alpha, frame, 0.0)
    ):
        assert where.any() and np.array_equal(plane_out[where], plane_in[where])
    inside = _full_and_half(alpha, frame, 1.0)[0]
    assert not np.array_equal(yuv.planes(out)[0][inside], yuv.planes(frame)[0][inside])


def test_frame_mode_and_errors(scene):
    frame, stylized, alpha = scene
    out = dc.compose("frame", frame, stylized)
    assert np.array_equal(out, dc.stylized_frame(stylized, 96, 128))
    # At the model's own size it is the engine's plain colour conversion.
    assert np.array_equal(dc.stylized_frame(stylized, 64, 64), yuv.from_rgb(stylized))
    with pytest.raises(ValueError, match="mode 'sepia'"):
        dc.compose("sepia", frame, stylized, alpha)
    with pytest.raises(ValueError, match="mask"):
        dc.compose("person", frame, stylized, None)


# -- ONNX export -------------------------------------------------------------------------------


def test_onnx_export_matches_torch(tmp_path):
    from camfx.export import diffusion as ex

    unet, vae = tiny_unet().eval(), tiny_taesd().eval()
    path = ex.export_unet(unet, tmp_path / "unet.onnx", batch=2, height=SIZE, width=SIZE)
    assert ex.check_parity(ex.UNetForExport(unet), path, ex.unet_inputs(unet, 2, SIZE, SIZE)) <= ex.TOLERANCE

    enc, dec = ex.export_taesd(vae, tmp_path, height=SIZE, width=2 * SIZE)
    assert dec.name == f"taesd_decoder_b1_{SIZE}x{2 * SIZE}.onnx"
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 4, generator=g)
    image = torch.rand(1, 3, SIZE, 2 * SIZE, generator=g) * 2 - 1
    assert ex.check_parity(ex.TAESDDecoder(vae), dec, {"latent": latent}) <= ex.TOLERANCE
    assert ex.check_parity(ex.TAESDEncoder(vae), enc, {"image": image}) <= ex.TOLERANCE


def test_bench_diffusion_runs_end_to_end_on_a_local_model(tiny_repo, tmp_path):
    """`camfx bench diffusion` on the tiny model (the full-size one takes minutes on a CPU), with
    StreamDiffusion driven on the same modules as the reference."""
    import json

    from camfx.bench.diffusion import main

    repo, taesd = tiny_repo
    args = ["--model", repo, "--taesd", taesd, "--size", "64", "--steps", "2", "--frames", "2", "--warmup", "1", "--prompt", "a cat",
            "--flicker-frames", "3", "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0
    data = json.loads((tmp_path / "diffusion.json").read_text())
    off, on, sd_off, sd_on = data["results"]
    assert (off["stream_batch"], off["lag_frames"], on["stream_batch"], on["lag_frames"]) == (False, 0, True, 1)
    for row in (off, on):
        assert row["runtime"] == "camfx eager"
        assert set(row["stages_ms"]) == {"encode", "unet", "decode"} and row["fps"] > 0
    assert data["reference"] == "streamdiffusion 0.1.1"
    assert (sd_off["runtime"], sd_off["stream_batch"], sd_on["stream_batch"]) == ("streamdiffusion 0.1.1", False, True)
    for row in data["results"]:
        same_batch = sd_on if row["stream_batch"] else sd_off
        assert row["fps_over_streamdiffusion"] == round(row["fps"] / same_batch["fps"], 2)
    assert data["composite_720p_ms"]["p50"] > 0
    assert set(data["flicker"]) == {"0.0", "0.5"}


def test_streamdiffusion_reference_makes_a_picture_from_the_camera_frame(tiny_repo):
    """The reference really runs img2img on our modules: its output follows its input."""
    from camfx.bench import streamdiffusion
    from camfx.models.diffusion import load_parts

    repo, taesd = tiny_repo
    parts = load_parts(repo, taesd_id=taesd, device="cpu")
    embeddings = Stylizer(parts, prompt="a cat").embeddings
    assert streamdiffusion.t_index_list(1, 0.5) == [25] and streamdiffusion.t_index_list(2, 0.5) == [25, 37]
    sd = streamdiffusion.Reference(parts, embeddings, 64, 1, 0.5, denoising_batch=False)
    dark, light = np.full((64, 64, 3), 20, np.uint8), np.full((64, 64, 3), 235, np.uint8)
    out_dark, out_light = sd.img2img(dark), sd.img2img(light)
    assert out_dark.shape == (64, 64, 3) and out_dark.dtype == np.uint8
    assert not np.array_equal(out_dark, out_light)
