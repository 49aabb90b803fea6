"""Decoded frames are read in place: plane views of a real decoder's padded buffers give the
same pictures as a copied array, and a frame the pipeline passes through goes out untouched."""

import av
import numpy as np
import pytest
from av import VideoFrame

from camfx.engine.effects.backgrounds import Backgrounds
from camfx.engine.media import frames, yuv
from camfx.engine.params import Params
from camfx.engine.pipeline.segmenter import Segmenters
from camfx.engine.pipeline.stages import Work, default_pipeline

pytestmark = pytest.mark.unit


def decoded_h264(rgb: np.ndarray) -> VideoFrame:
    """`rgb` through a real H.264 encoder and decoder (whose frames have padded rows)."""
    h, w = rgb.shape[:2]
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuv420p"
    encoder.options = {"tune": "zerolatency"}
    decoder = av.CodecContext.create("h264", "r")
    source = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    packets = encoder.encode(source) + encoder.encode(None)
    return next(f for p in packets for f in decoder.decode(p))


@pytest.fixture(scope="module")
def decoded():
    rgb = np.random.default_rng(0).integers(0, 256, (240, 360, 3), dtype=np.uint8)
    frame = decoded_h264(rgb)
    assert frame.planes[0].line_size > frame.width  # padded rows: what the views must handle
    return frame


def test_plane_views_read_the_decoded_buffers_in_place(decoded):
    views = frames.plane_views(decoded)
    assert [v.shape for v in views] == [(240, 360), (120, 180), (120, 180)]
    assert np.array_equal(yuv.contiguous(views), decoded.to_ndarray(format="yuv420p"))
    # No copy: the view is the decoder's memory.
    address = views[0].__array_interface__["data"][0]
    assert address == decoded.planes[0].buffer_ptr


def test_odd_or_other_formats_become_even_i420():
    rgb = np.zeros((241, 361, 3), np.uint8)
    frame = frames.as_i420(VideoFrame.from_ndarray(rgb, format="rgb24"))
    assert (frame.format.name, frame.width, frame.height) == ("yuv420p", 360, 240)
    even = VideoFrame(360, 240, "yuv420p")
    assert frames.as_i420(even) is even


@pytest.mark.parametrize("effect", ["none", "blur", "replace", "remove", "toon"])
def test_every_effect_gives_the_same_picture_from_plane_views(decoded, effect):
    pipeline = default_pipeline(Segmenters(), Backgrounds())
    params = Params(effect=effect, probe=True)
    views = frames.plane_views(decoded)
    from_views = pipeline.process(Work(image=views, params=params)).output
    from_copy = pipeline.process(Work(image=decoded.to_ndarray(format="yuv420p"), params=params)).output
    assert np.array_equal(yuv.contiguous(from_views), from_copy)
    if effect == "none":
        assert from_views is views  # passed through: the session sends the decoded frame itself
