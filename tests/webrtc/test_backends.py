"""Runtimes and their fallback chain, plan cache keys and ONNX preparation for TensorRT.

TensorRT and CUDA cannot run here: the chain is exercised with runtimes that fail on purpose in
front of the real onnxruntime CPU one, and TensorRT's inputs (prepared ONNX files, profiles,
cache keys) are checked on the real bundled models.
"""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import numpy as np
import pytest

from camfx.bench.peer import ClientPeer, SyntheticCamera
from camfx.engine.doctor import main as doctor
from camfx.engine.pipeline import segmenter as segmenter_module
from camfx.engine.runtimes.base import Runtime, RuntimeFailure
from camfx.engine.runtimes.cache import PlanKey, cache_dir, plan_path, segmentation_key
from camfx.engine.runtimes.chain import Candidate, RuntimeChain, candidates_for
from camfx.engine.runtimes.onnxruntime import OnnxRuntime
from camfx.export.tensorrt import plan_key, prepare_onnx
from camfx.models.registry import SEGMENTATION_MODELS, model_path

from ..conftest import start_server

pytestmark = pytest.mark.webrtc

CPU = "onnxruntime:CPUExecutionProvider"


def _image(name: str, batch: int = 1, seed: int = 0) -> np.ndarray:
    spec = SEGMENTATION_MODELS[name]
    return np.random.default_rng(seed).random((batch, spec.input_height, spec.input_width, 3), dtype=np.float32)


def _cpu(name: str = "landscape") -> Candidate:
    return Candidate(CPU, lambda: OnnxRuntime(model_path(name), "CPUExecutionProvider"))


class Flaky(Runtime):
    """Runs the real CPU model `ok_runs` times, then fails like a lost GPU would."""

    name = "flaky-gpu"

    def __init__(self, ok_runs: int):
        self._inner = OnnxRuntime(model_path("landscape"), "CPUExecutionProvider")
        self.ok_runs = ok_runs

    def run(self, inputs):
        if self.ok_runs <= 0:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.ok_runs -= 1
        return self._inner.run(inputs)


def _cannot_load() -> Runtime:
    raise RuntimeError("libnvinfer.so.10: cannot open shared object file")


def test_a_runtime_that_fails_to_load_is_skipped_visibly(caplog):
    caplog.set_level("INFO", logger="camfx.runtime")
    dropped = []
    chain = RuntimeChain(
        "landscape", [Candidate("tensorrt", _cannot_load), _cpu()], lambda *args: dropped.append(args)
    )
    assert chain.name == CPU
    assert dropped == [("landscape", "tensorrt", "load: libnvinfer.so.10: cannot open shared object file")]
    assert "tensorrt failed to load" in caplog.text and f"using {CPU}" in caplog.text
    out = chain.run({"image": _image("landscape")})["mask"]
    assert out.shape == (1, 144, 256, 1)


def test_a_runtime_that_fails_at_run_time_hands_the_same_input_to_the_next():
    dropped = []
    flaky = Flaky(ok_runs=2)
    chain = RuntimeChain("landscape", [Candidate("flaky-gpu", lambda: flaky), _cpu()], lambda *a: dropped.append(a))
    reference = OnnxRuntime(model_path("landscape"), "CPUExecutionProvider")
    for seed in range(4):  # two runs on the flaky one, the third fails over, the fourth is on CPU
        image = {"image": _image("landscape", seed=seed)}
        np.testing.assert_array_equal(chain.run(image)["mask"], reference.run(image)["mask"])
    assert chain.name == CPU
    assert [d[1] for d in dropped] == ["flaky-gpu"] and dropped[0][2].startswith("run: CUDA error")
    assert chain.failures == ["flaky-gpu: run: CUDA error: an illegal memory access was encountered"]


def test_when_every_runtime_fails_the_error_says_why():
    with pytest.raises(RuntimeFailure, match="no runtime could load model 'landscape'.*libnvinfer"):
        RuntimeChain("landscape", [Candidate("tensorrt", _cannot_load)])
    chain = RuntimeChain("landscape", [Candidate("flaky-gpu", lambda: Flaky(0))])
    with pytest.raises(RuntimeFailure, match="CUDA error"):
        chain.run({"image": _image("landscape")})


def test_this_machine_chain_is_onnxruntime_cpu_and_tensorrt_needs_an_engine(tmp_path):
    assert [c.name for c in candidates_for(model_path("general"))][-1] == CPU
    # A plan file alone does not put native TensorRT in the chain where tensorrt is missing.
    plan = tmp_path / "general.plan"
    plan.write_bytes(b"not an engine")
    names = [c.name for c in candidates_for(model_path("general"), engine=plan)]
    assert "tensorrt" not in names


@pytest.mark.parametrize("name", sorted(SEGMENTATION_MODELS))
def test_io_binding_gives_the_plain_run_result(name):
    image = {"image": _image(name)}
    plain = OnnxRuntime(model_path(name), "CPUExecutionProvider", io_binding=False).run(image)
    bound = OnnxRuntime(model_path(name), "CPUExecutionProvider", io_binding=True).run(image)
    np.testing.assert_array_equal(plain["mask"], bound["mask"])


# ---- plan keys --------------------------------------------------------------------------------
BASE = PlanKey(
    model="landscape", weights_sha256="ab" * 32, input_shapes=(("image", (1, 144, 256, 3)),), max_batch=4,
    precision="fp16", tensorrt="10.13.0", gpu="NVIDIA H100 80GB HBM3",
)
CHANGES = {
    "model": "general",
    "weights_sha256": "cd" * 32,
    "input_shapes": (("image", (1, 288, 512, 3)),),  # the resolution
    "max_batch": 1,
    "precision": "fp32",
    "tensorrt": "10.14.1",
    "gpu": "NVIDIA H200",
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_the_plan_key_changes_with_every_input(field):
    changed = dataclasses.replace(BASE, **{field: CHANGES[field]})
    assert changed.digest() != BASE.digest()
    assert changed.filename() != BASE.filename()


def test_the_plan_key_is_stable_and_files_are_named_after_the_model(monkeypatch, tmp_path):
    assert dataclasses.replace(BASE).digest() == BASE.digest()
    assert set(f.name for f in dataclasses.fields(PlanKey)) == set(CHANGES)  # nothing left out
    assert BASE.filename().startswith("landscape-") and BASE.filename().endswith(".plan")
    assert PlanKey(**{**dataclasses.asdict(BASE), "model": "stabilityai/sd-turbo:unet"}).filename().startswith(
        "stabilityai_sd-turbo_unet-"
    )
    monkeypatch.setenv("CAMFX_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "engines"
    assert plan_path(BASE).parent == tmp_path / "engines"
    general = segmentation_key("general", 4, "fp16", "10.13.0", "gpu")
    landscape = segmentation_key("landscape", 4, "fp16", "10.13.0", "gpu")
    assert general.weights_sha256 == SEGMENTATION_MODELS["general"].sha256
    assert dict(landscape.input_shapes)["image"] == (1, 144, 256, 3)
    assert general.digest() != landscape.digest()


# ---- ONNX preparation for TensorRT, on the real bundled models ------------------------------
@pytest.mark.parametrize("name", sorted(SEGMENTATION_MODELS))
def test_prepared_onnx_has_a_batch_profile_and_batches_exactly(name, tmp_path):
    import onnx
    import onnxruntime as ort

    spec = SEGMENTATION_MODELS[name]
    plan = prepare_onnx(model_path(name), tmp_path / f"{name}.onnx", max_batch=4, opt_batch=2)
    shape = (spec.input_height, spec.input_width, 3)
    assert plan.inputs == {"image": (1, *shape)}
    assert plan.outputs == {"mask": (1, spec.input_height, spec.input_width, 1)}
    assert plan.profile == {"image": ((1, *shape), (2, *shape), (4, *shape))}
    graph = onnx.load(str(plan.path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # Batch 3 through onnxruntime equals three single runs: the profile's batches are real.
    session = ort.InferenceSession(str(plan.path), providers=["CPUExecutionProvider"])
    images = _image(name, batch=3, seed=5)
    batched = session.run(None, {"image": images})[0]
    single = OnnxRuntime(model_path(name), "CPUExecutionProvider")
    for i in range(3):
        np.testing.assert_allclose(batched[i : i + 1], single.run({"image": images[i : i + 1]})["mask"], atol=1e-5)
    key = plan_key(name, model_path(name), plan, "fp16", "10.13.0", "gpu")
    assert key == segmentation_key(name, 4, "fp16", "10.13.0", "gpu")


def test_serve_finds_the_plan_that_export_builds_by_default(tmp_path, monkeypatch):
    """`camfx export engines` (default --max-batch) and `camfx serve` must agree on the key."""
    from camfx.engine.runtimes import cache, probe
    from camfx.export import engines

    def build_plan(name, source, plan, *, fp16, directory, progress):  # what TensorRT would write
        path = cache.plan_path(plan_key(name, source, plan, "fp16", "10.13.0", "gpu"), directory)
        path.write_bytes(b"plan")
        return path

    monkeypatch.setenv("CAMFX_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "tensorrt_facts", lambda: ("10.13.0", "gpu"))
    monkeypatch.setattr(engines, "build_plan", build_plan)
    assert cache.cached_segmentation_plan("landscape") is None
    assert engines.main([]) == 0
    built = next(tmp_path.glob("engines/landscape-*.plan"))
    assert cache.cached_segmentation_plan("landscape") == built


def test_prepare_onnx_refuses_shapes_tensorrt_cannot_plan(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "height", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "height", 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    with pytest.raises(ValueError, match="x needs fixed dimensions"):
        prepare_onnx(tmp_path / "dynamic.onnx", tmp_path / "out.onnx")
    with pytest.raises(ValueError, match="opt_batch"):
        prepare_onnx(model_path("general"), tmp_path / "out.onnx", max_batch=2, opt_batch=3)


def test_export_engines_prepares_everything_and_says_tensorrt_is_missing(tmp_path, capsys):
    from camfx.export.engines import main

    assert main(["--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["general.trt.onnx", "landscape.trt.onnx"]


def test_doctor_names_every_model_and_its_runtime(capsys):
    assert doctor([]) == 0
    out = capsys.readouterr().out
    for name in SEGMENTATION_MODELS:
        assert f"segmentation {name}  {CPU}" in out
    assert "TensorRT  not installed" in out and "onnxruntime" in out


# ---- a live stream survives its runtime failing --------------------------------------------------
async def test_a_stream_goes_on_when_its_runtime_fails_mid_session(clip_640, monkeypatch):
    def flaky_chain(name, path, threads=1, engine=None, on_fallback=lambda *a: None, batch=False):
        return RuntimeChain(name, [Candidate("flaky-gpu", lambda: Flaky(ok_runs=15)), _cpu(name)], on_fallback)

    monkeypatch.setattr(segmenter_module, "load_chain", flaky_chain)
    runner, server = await start_server()
    peer = ClientPeer(SyntheticCamera(clip_640), codec="VP8")
    try:
        await peer.connect(server.url, {"effect": "blur", "model": "landscape"})  # Flaky's model
        await peer.wait_frames(40)  # well past the 15th run
        # Processed frames keep coming after the failure (not a frozen or black stream): counted,
        # not timed, so a busy machine cannot fail it.
        start = len(peer.received.fresh)
        deadline = asyncio.get_running_loop().time() + 20
        while len(peer.received.fresh) < start + 30 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert len(peer.received.fresh) >= start + 30
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                health = await resp.json()
            async with http.get(f"{server.url}/metrics") as resp:
                metrics = await resp.text()
            async with http.get(f"{server.url}/sessions/{peer.session_id}") as resp:
                stats = await resp.json()
        assert health["runtimes"]["landscape"] == CPU
        assert health["runtime_fallbacks"]["landscape"][0].startswith("flaky-gpu: run: CUDA error")
        assert 'camfx_runtime_fallbacks_total{model="landscape",runtime="flaky-gpu"} 1.0' in metrics
        # The names of 0.1, kept one release.
        assert health["backends"] == health["runtimes"] and health["backend_fallbacks"] == health["runtime_fallbacks"]
        assert 'camfx_backend_fallbacks_total{model="landscape",runtime="flaky-gpu"} 1.0' in metrics
        assert stats["runtimes"]["landscape"]["runtime"] == CPU
        assert stats["runtimes"]["landscape"]["failed"]
        assert server.hub.metrics.pipeline_errors._value.get() == 0  # no frame was lost to it
    finally:
        await peer.close()
        await runner.cleanup()


def test_bench_runtimes_times_every_runtime_in_the_chain(tmp_path):
    import json

    from camfx.bench.runtimes import main

    argv = ["--sizes", "640x480", "--frames", "5", "--sessions", "2", "--device-pipeline", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    data = json.loads((tmp_path / "runtimes.json").read_text())
    rows = data["results"]
    assert {(r["model"], r["runtime"]) for r in rows} == {(m, CPU) for m in SEGMENTATION_MODELS}
    for row in rows:  # timed, not compared: which is faster is the benchmark's to say, not a test's
        assert row["segment_ms"]["p50"] > 0 and row["blur_pipeline_ms"]["p50"] > 0
        assert row["blur_pipeline_ms"]["cpu_ms_per_frame"] > 0
        assert row["device"] == "cpu" and row["device_blur_pipeline_ms"]["p50"] > 0
    assert {(r["model"], r["sessions"]) for r in data["sessions"]} == {(m, 2) for m in SEGMENTATION_MODELS}
    for row in data["sessions"]:
        assert row["side_by_side"]["fps"] > 0 and 1 <= row["batched"]["mean_batch"] <= 2
        for how in ("side_by_side", "batched"):  # what the sessions cost, from the process's CPU clock
            cost = row[how]
            assert cost["cores"] > 0 and cost["cores_per_session"] == pytest.approx(cost["cores"] / 2, abs=0.01)
            assert cost["cpu_ms_per_frame"] > 0
