"""The torch runtime (our ONNX files run by torch ops) and batching sessions into one model call.

The torch runtime's target is CUDA; its graph executor is the same on the CPU, which is where it
is checked here against onnxruntime on the real bundled models. Batching is checked with the real
onnxruntime CPU model behind it, with a delay around the call where a test needs runs to overlap.
"""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import numpy as np
import pytest

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.config import ServerConfig
from camfx.engine.params import Params
from camfx.engine.runtimes import chain as runtime_chain
from camfx.engine.runtimes.base import Runtime
from camfx.engine.runtimes.batching import BatchingRuntime
from camfx.engine.runtimes.chain import Candidate, RuntimeChain
from camfx.engine.runtimes.onnx_torch import OnnxTorchModule
from camfx.engine.runtimes.onnxruntime import OnnxRuntime
from camfx.engine.runtimes.torch import TorchRuntime
from camfx.models.registry import SEGMENTATION_MODELS, model_path

from ..conftest import start_server

pytestmark = pytest.mark.webrtc

CPU = "onnxruntime:CPUExecutionProvider"


def _images(name: str, batch: int, seed: int = 0) -> np.ndarray:
    spec = SEGMENTATION_MODELS[name]
    return np.random.default_rng(seed).random((batch, spec.input_height, spec.input_width, 3), dtype=np.float32)


# ---- the torch runtime ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SEGMENTATION_MODELS))
def test_torch_runtime_equals_onnxruntime_on_the_bundled_models_at_any_batch(name, portrait_rgb):
    import cv2

    reference = OnnxRuntime(model_path(name), "CPUExecutionProvider")
    runtime = TorchRuntime(model_path(name), "cpu")
    assert runtime.name == "torch:cpu"
    spec = SEGMENTATION_MODELS[name]
    photo = cv2.resize(portrait_rgb, (spec.input_width, spec.input_height)).astype(np.float32) / 255
    images = np.stack([photo, photo[:, ::-1], _images(name, 1, seed=1)[0]])  # a person, mirrored, noise
    got = runtime.run({"image": images})["mask"]
    assert got.shape == (3, *images.shape[1:3], 1) and got.dtype == np.float32
    for i in range(3):
        expected = reference.run({"image": images[i : i + 1]})["mask"]
        np.testing.assert_allclose(got[i : i + 1], expected, atol=1e-4)  # float summation order
    assert (got[0] > 0.9).mean() > 0.1 and (got[0] < 0.1).mean() > 0.1  # person and background found


def test_torch_runtime_nearest_resize_equals_onnxruntime():
    """The exports' asymmetric / floor nearest Resize, on a picture where each source pixel differs."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [scales]),
                              opset_imports=[helper.make_opsetid("", 17)])
    picture = np.random.default_rng(0).random((1, 2, 3, 4), dtype=np.float32)
    got = OnnxTorchModule(model)(x=torch.from_numpy(picture))["y"].numpy()
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": picture})[0]
    assert got.shape == (1, 2, 6, 12)
    np.testing.assert_array_equal(got, expected)


def test_torch_runtime_refuses_an_operator_it_does_not_implement():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(NotImplementedError, match="does not implement ONNX Softmax"):
        OnnxTorchModule(helper.make_model(graph))


def test_torch_cuda_comes_before_onnxruntime_cpu_and_without_cuda_is_dropped_visibly(monkeypatch):
    """A machine with an NVIDIA driver but a torch that cannot reach the GPU: the torch runtime is
    tried, fails to load with the reason, and onnxruntime's CPU path serves."""
    monkeypatch.setattr(runtime_chain, "torch_cuda_possible", lambda: True)
    chain = runtime_chain.candidates_for(model_path("landscape"))
    names = [c.name for c in chain]
    assert names.index("torch:cuda") == names.index(CPU) - 1
    dropped = []
    runtime = RuntimeChain("landscape", chain, lambda *a: dropped.append(a))
    assert runtime.name == CPU
    assert dropped == [("landscape", "torch:cuda", "load: torch sees no CUDA GPU")]


# ---- batching ------------------------------------------------------------------------------------
class Slow(Runtime):
    """The real model, batch 1..4, each call held `delay` seconds (a busy GPU), calls recorded."""

    name = "slow"
    max_batch = 4

    def __init__(self, delay: float = 0.03, fail_calls: int = 0):
        self._inner = OnnxRuntime(model_path("landscape"), "CPUExecutionProvider", batch=True)
        self.delay, self.fail_calls = delay, fail_calls
        self.batches: list[int] = []

    def run(self, inputs):
        time.sleep(self.delay)
        self.batches.append(len(inputs["image"]))
        if self.fail_calls > 0:
            self.fail_calls -= 1
            raise RuntimeError("CUDA error: device lost")
        return self._inner.run(inputs)


def _in_threads(count: int, work) -> list:
    results: list = [None] * count

    def run(i):
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_runs_that_arrive_together_share_a_call_and_each_gets_its_own_result():
    slow = Slow()
    batcher = BatchingRuntime(slow)
    reference = OnnxRuntime(model_path("landscape"), "CPUExecutionProvider")
    inputs = [_images("landscape", 1, seed=i) for i in range(4)]

    def session(i):
        return [batcher.run({"image": inputs[i]})["mask"] for _ in range(5)]

    outputs = _in_threads(4, session)
    for i, masks in enumerate(outputs):
        expected = reference.run({"image": inputs[i]})["mask"]
        for mask in masks:  # each session got the mask of its own frame, never a neighbour's
            np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert sum(slow.batches) == batcher.frames == 20
    assert batcher.calls == len(slow.batches) < 20 and max(slow.batches) > 1
    assert max(slow.batches) <= 4


def test_a_lone_session_never_waits_for_company():
    slow = Slow(delay=0.0)
    batcher = BatchingRuntime(slow)
    for seed in range(5):
        batcher.run({"image": _images("landscape", 1, seed)})
    assert slow.batches == [1] * 5 and batcher.calls == batcher.frames == 5


def test_a_failed_batched_call_fails_every_run_in_it_and_the_next_calls_work():
    slow = Slow(delay=0.05, fail_calls=1)
    batcher = BatchingRuntime(slow)

    def session(i):
        try:
            batcher.run({"image": _images("landscape", 1, seed=i)})
            return "ok"
        except RuntimeError as exc:
            return str(exc)

    first = _in_threads(3, session)
    assert "CUDA error: device lost" in first and set(first) <= {"ok", "CUDA error: device lost"}
    assert _in_threads(3, session) == ["ok"] * 3
    assert batcher.waiting == 0 and not batcher.busy


def test_a_runtime_that_cannot_stack_lets_sessions_run_side_by_side():
    """Batch-1 runtimes (onnxruntime CPU here) are not serialised by the batcher: two runs meet
    inside the model at the same time, which a serialised batcher would never allow."""
    meet = threading.Barrier(2, timeout=5)

    class SideBySide(Runtime):
        name, max_batch = "cpu", 1

        def run(self, inputs):
            meet.wait()  # raises BrokenBarrierError if the other run cannot get in
            return {"mask": inputs["image"][..., :1]}

    batcher = BatchingRuntime(SideBySide())
    results = _in_threads(2, lambda i: batcher.run({"image": _images("landscape", 1, i)})["mask"].shape)
    assert results == [(1, 144, 256, 1)] * 2


def test_a_batch_that_falls_back_to_a_batch_1_runtime_is_split_not_lost():
    reference = OnnxRuntime(model_path("landscape"), "CPUExecutionProvider")
    chain = RuntimeChain("landscape", [Candidate("slow", lambda: Slow(0.0, fail_calls=1)),
                                          Candidate(CPU, lambda: reference)])
    assert chain.max_batch == 4
    images = _images("landscape", 3, seed=7)
    got = chain.run({"image": images})["mask"]  # the batch of 3 fails over to batch-1 onnxruntime
    assert chain.name == CPU and chain.max_batch == 1 and got.shape == (3, 144, 256, 1)
    for i in range(3):
        np.testing.assert_allclose(got[i : i + 1], reference.run({"image": images[i : i + 1]})["mask"], atol=1e-6)


async def test_two_live_sessions_are_batched_when_asked(clip_640):
    runner, server = await start_server(ServerConfig(batch_sessions="on", device="cpu"))
    peers = [ClientPeer(SyntheticCamera(clip_640), codec="VP8") for _ in range(2)]
    try:
        for peer in peers:
            await peer.connect(server.url, {"effect": "blur"})
        for peer in peers:
            await peer.wait_frames(30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                health = await resp.json()
        model = Params().model
        batching = health["batching"][model]
        assert batching["frames"] >= 20 and 0 < batching["calls"] <= batching["frames"]
        assert health["runtimes"][model] == CPU
    finally:
        await asyncio.gather(*(peer.close() for peer in peers))
        await runner.cleanup()
    assert server.hub.segmenters.get(model).runtime.waiting == 0


async def test_batching_is_off_on_a_cpu_by_default():
    runner, server = await start_server(ServerConfig(device="cpu"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                assert (await resp.json())["batching"] == {}
    finally:
        await runner.cleanup()
