"""Streams batched into one UNet call (and one TAESD encode / decode) on tiny models: each gets
what it would get alone. Tolerance: one grey level per pixel (uint8), for the float rounding of
batched kernels; in practice the pictures are mostly identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camfx.engine.diffusion.sampler import Sampler
from camfx.engine.diffusion.stylizer import Stylizer, img2img_batch

pytestmark = pytest.mark.unit

SIZE = 64
SETTINGS = [  # each stream its own prompt, seed, steps, strength, guidance, stream batch
    dict(prompt="a cat", seed=1, steps=1, strength=0.5),
    dict(prompt="a dog", seed=2, steps=3, strength=0.8, guidance=1.5),
    dict(prompt="cat dog", seed=3, steps=2, strength=0.6, stream_batch=True, feedback=0.3),
]


@pytest.fixture(scope="module")
def parts(tiny_repo):
    from camfx.models.diffusion import load_parts

    repo, taesd = tiny_repo
    return load_parts(repo, taesd_id=taesd)


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(count)]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


def test_batched_streams_get_what_each_gets_alone(parts):
    alone = [Stylizer(parts, **s) for s in SETTINGS]
    together = [Stylizer(parts, alone[0].networks, **s) for s in SETTINGS]
    for _ in range(3):  # three frames: the stream batch's pipe and the feedback carry over
        frames = _frames(len(SETTINGS), seed=_)
        expected = [s.img2img(f) for s, f in zip(alone, frames)]
        got = img2img_batch(together, frames)
        assert all(_close(e, g) for e, g in zip(expected, got))
        assert len({g.tobytes() for g in got}) == len(got)  # the streams did not get each other's


def test_a_prompt_change_touches_only_that_stream(parts):
    a, b = Stylizer(parts, prompt="a cat", seed=1), Stylizer(parts, prompt="a dog", seed=2)
    b.networks = a.networks
    frames = _frames(2)
    before = img2img_batch([a, b], frames)
    a.prompt = "cat cat dog"
    after = img2img_batch([a, b], frames)
    assert np.array_equal(before[1], after[1])
    assert not np.array_equal(before[0], after[0])


def test_a_batch_is_one_size_and_one_model(parts):
    a = Stylizer(parts, prompt="a cat")
    b = Stylizer(parts, prompt="a cat")  # its own networks object
    with pytest.raises(ValueError, match="one model"):
        img2img_batch([a, b], _frames(2))
    b.networks = a.networks
    with pytest.raises(ValueError, match="one picture size"):
        img2img_batch([a, b], [_frames(1)[0], np.zeros((SIZE, SIZE * 2, 3), np.uint8)])


def test_the_sampler_refuses_a_prediction_type_it_does_not_know(parts):
    from diffusers import EulerDiscreteScheduler

    with pytest.raises(ValueError, match="'sample'"):
        Sampler(EulerDiscreteScheduler(prediction_type="sample"), "turbo", torch.device("cpu"), torch.float32)
    v = Sampler(EulerDiscreteScheduler(prediction_type="v_prediction"), "turbo", torch.device("cpu"), torch.float32)
    x, out = torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    t = torch.tensor([999, 0])
    clean = v.step(x, out, t, torch.zeros_like(x), torch.ones(2))
    # v prediction with v = 0: x0 = sqrt(a_t) x, element by element at its own timestep.
    assert torch.allclose(clean[:, 0, 0, 0], v._table[t, 0])
