"""The fused clean composite and mask steps (`effects.fused`) give the pictures of the plain
step-by-step functions they replace, on random frames and masks."""

import cv2
import numpy as np
import pytest

from camfx.engine.effects import filters as effects
from camfx.engine.effects.mask import MaskRefiner, steepen, work_size
from camfx.engine.media import yuv
from camfx.engine.params import Params
from camfx.engine.pipeline.stages import composite_clean, edge_colours

pytestmark = pytest.mark.unit


def random_case(h, w, seed):
    """A noisy frame with smooth colour regions, and a soft blob of a mask at work resolution."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    wh, ww = h // 5, round(w * (h // 5) / h)
    blob = cv2.resize(rng.random((6, 8), dtype=np.float32), (ww, wh), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip((blob - 0.5) * 6 + 0.5, 0, 1).astype(np.float32)
    return yuv.from_rgb(rgb), alpha


def step_by_step(frame, layer, alpha, p):
    """The clean composite as the plain functions make it."""
    if layer is None:
        keep = effects.sure_weights(alpha)[1]
        add = cv2.split(edge_colours(frame, alpha, at_mask_size=False))
        return effects.composite(frame, effects.blurred(frame, p.blur_strength, keep=keep, add=add, share=alpha), alpha)
    return effects.composite(frame, layer, alpha, effects.edge_correction(edge_colours(frame, alpha), alpha))


@pytest.mark.parametrize("h, w", [(720, 1280), (480, 640), (270, 480)])
@pytest.mark.parametrize("effect", ["blur", "replace", "remove"])
@pytest.mark.parametrize("strength", [12.0, 3.0])
def test_fused_composite_matches_the_steps(h, w, effect, strength):
    for seed in range(2):
        frame, alpha = random_case(h, w, seed)
        layer = None if effect == "blur" else yuv.from_rgb(np.full((h, w, 3), (20, 200, 60), np.uint8))
        p = Params(effect=effect, blur_strength=strength)
        fast = composite_clean(frame, layer, alpha, p).astype(int)
        plain = step_by_step(frame, layer, alpha, p).astype(int)
        difference = np.abs(fast - plain)
        assert difference.max() <= 1
        assert (difference > 0).mean() < 0.001
        assert np.abs(fast - frame.astype(int)).mean() > 1  # it did composite something


def test_fused_edge_colours_match():
    frame, alpha = random_case(480, 640, 3)
    h, w = alpha.shape[0] // 2, alpha.shape[1] // 2
    halvings = yuv.Halvings(frame)
    small = np.stack([halvings.shrink(i, h, w) for i in range(3)])
    small_alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    fast = effects.edge_colours_fast(small, small_alpha, alpha.shape)
    plain = edge_colours(frame, alpha)
    assert np.abs(plain).max() > 20  # there are edges with colour on both sides
    np.testing.assert_allclose(fast, plain, atol=1e-3)


def plain_refine(previous, previous_luma, probability, frame, smoothing):
    """`MaskRefiner.refine`'s soft smoothing, written out: (alpha, the new previous, luma)."""
    wh, ww = work_size(yuv.frame_size(frame), probability.shape)
    alpha = cv2.resize(probability, (ww, wh), interpolation=cv2.INTER_LINEAR)
    luma = yuv.Halvings(frame).shrink(0, wh, ww).astype(np.float32)
    if previous is not None:
        motion = cv2.blur(cv2.absdiff(luma, previous_luma), (3, 3))
        still = np.clip((6.0 - motion) / 4.5, 0.0, 1.0).astype(np.float32)
        alpha = alpha + still * np.float32(smoothing) * (previous - alpha)
    return steepen(alpha.copy()), alpha, luma


def test_fused_refine_matches_the_steps():
    rng = np.random.default_rng(5)
    refiner, previous, previous_luma = MaskRefiner(), None, None
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for i in range(4):
        # Part of the picture moves (the smoothing keeps less there), part is still.
        rgb = base.copy()
        rgb[:, :200] = np.roll(base[:, :200], 7 * i, axis=0)
        frame = yuv.from_rgb(rgb)
        probability = rng.random((144, 256), dtype=np.float32)
        fast = refiner.refine(probability, frame, smoothing=0.6)
        expected, previous, previous_luma = plain_refine(previous, previous_luma, probability, frame, 0.6)
        assert fast.shape == work_size((480, 640), (144, 256))
        np.testing.assert_allclose(fast, expected, atol=1e-5)
