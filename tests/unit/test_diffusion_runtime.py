"""The stylizer's UNet and TAESD on the runtime chain (onnxruntime here; TensorRT where built),
with torch as the floor: tiny real models exported with the export code, loaded by serve's code.

TensorRT cannot be installed on our machines: only the lookup of its plans is checked, with
the TensorRT facts (version, GPU) and the plan build stood in for.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from camfx.engine.diffusion import networks as dr
from camfx.engine.diffusion.stylizer import Stylizer
from camfx.engine.runtimes.base import Runtime
from camfx.engine.runtimes.cache import PARTS, ExportRecord, export_dir, fingerprint
from camfx.engine.runtimes.chain import Candidate
from camfx.models.diffusion import load_parts

pytestmark = pytest.mark.unit

SIZE = 64
CPU = "onnxruntime:CPUExecutionProvider"


@pytest.fixture(scope="module")
def exported(tiny_repo, tmp_path_factory):
    """(torch parts, a cache holding the tiny model's parts exported at SIZE x SIZE)."""
    from camfx.export.diffusion import export_for_serve

    repo, taesd = tiny_repo
    parts = load_parts(repo, taesd_id=taesd, device="cpu")
    cache = tmp_path_factory.mktemp("cache")
    export_for_serve(parts, "tiny", SIZE, SIZE, cache=cache, max_batch=4)
    return parts, cache


def _frames(count: int, height: int = SIZE, width: int = SIZE) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_the_networks_give_the_torch_outputs_at_batch_1_to_3(exported):
    parts, cache = exported
    fast = dr.accelerated_networks(parts, "tiny", cache)
    assert all(fast.parts[part] is not None for part in PARTS)  # each on its chain
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in (1, 2, 3):
            x = torch.randn(batch, 4, SIZE // 8, SIZE // 8, generator=g)
            t = torch.tensor([999, 499, 249][:batch])  # long, as the stylizer passes it
            e = torch.randn(1, 16, 32, generator=g).expand(batch, -1, -1)
            want = parts.unet(x, t, encoder_hidden_states=e, return_dict=False)[0]
            got = fast.unet(x, t, e)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast.unet(x, t[:1], e), parts.unet(x, t[:1], encoder_hidden_states=e).sample,
                                   atol=1e-4, rtol=1e-4)  # one timestep for the whole batch
        image = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
        latents = parts.vae.encode(image).latents
        torch.testing.assert_close(fast.encode(image), latents, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fast.decode(latents), parts.vae.decode(latents).sample, atol=1e-4, rtol=1e-4)
    info = dr.runtime_info(fast)
    assert {part: info[part]["runtime"] for part in PARTS} == dict.fromkeys(PARTS, CPU)
    assert info["unet"]["exported"] == ["64x64"] and not info["unet"]["fallbacks"]


@pytest.mark.parametrize("settings", [
    {"steps": 1},
    {"steps": 2, "stream_batch": True, "guidance": 1.5, "strength": 0.9},  # the UNet at batch 2
])
def test_stylizer_on_onnxruntime_gives_the_torch_pictures(exported, settings):
    parts, cache = exported
    fast = dr.accelerated_networks(parts, "tiny", cache)
    plain = Stylizer(parts, prompt="a cat", **settings)
    accelerated = Stylizer(parts, fast, prompt="a cat", **settings)
    for frame in _frames(3):
        assert _levels(accelerated.img2img(frame), plain.img2img(frame)) <= 2
    assert _levels(accelerated.txt2img(SIZE, SIZE), plain.txt2img(SIZE, SIZE)) <= 2
    assert {v["runtime"] for v in dr.runtime_info(fast).values()} == {CPU}


class Broken(Runtime):
    """A GPU runtime that loads and then fails at run time."""

    name = "broken-gpu"

    def run(self, inputs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_runtime_failing_at_run_time_is_dropped_and_torch_takes_over(exported):
    parts, cache = exported
    dropped = []
    fast = dr.accelerated_networks(
        parts, "tiny", cache,
        chain=lambda record, torch_candidate: [Candidate("broken-gpu", Broken), torch_candidate],
        on_fallback=lambda model, failed, reason: dropped.append((model, failed)),
    )
    plain = Stylizer(parts, prompt="a cat", steps=2)
    accelerated = Stylizer(parts, fast, prompt="a cat", steps=2)
    for frame in _frames(2):
        assert np.array_equal(accelerated.img2img(frame), plain.img2img(frame))
    info = dr.runtime_info(fast)
    for part in PARTS:
        assert info[part]["runtime"] == "torch"
        assert info[part]["fallbacks"] == ["64x64 broken-gpu: run: CUDA error: an illegal memory access was encountered"]
    assert sorted(dropped) == [(f"tiny:{part}_64x64", "broken-gpu") for part in sorted(PARTS)]


def test_an_onnx_file_that_does_not_load_falls_back_to_torch(exported, tmp_path):
    parts, cache = exported
    shutil.copytree(cache, tmp_path, dirs_exist_ok=True)
    unet = next((tmp_path / "onnx" / "diffusion").glob("unet-*.trt.onnx"))
    unet.write_bytes(unet.read_bytes()[:1000])  # cut short
    fast = dr.accelerated_networks(parts, "tiny", tmp_path)
    frame = _frames(1)[0]
    assert np.array_equal(Stylizer(parts, fast).img2img(frame), Stylizer(parts).img2img(frame))
    info = dr.runtime_info(fast)
    assert info["unet"]["runtime"] == "torch" and info["taesd_decoder"]["runtime"] == CPU
    assert info["unet"]["fallbacks"][0].startswith(f"64x64 {CPU}: load:")


def test_a_size_without_exported_files_runs_on_torch(exported):
    parts, cache = exported
    fast = dr.accelerated_networks(parts, "tiny", cache)
    s, plain = Stylizer(parts, fast), Stylizer(parts)
    wide = _frames(1, SIZE, 2 * SIZE)[0]
    assert np.array_equal(s.img2img(wide), plain.img2img(wide))
    s.img2img(_frames(1)[0])  # the size changes live: the exported one is found
    info = dr.runtime_info(fast)
    assert info["unet"]["runtimes"] == {"64x128": "torch", "64x64": CPU}


def test_nothing_exported_leaves_the_networks_on_torch(exported, tmp_path):
    parts, _ = exported
    networks = dr.accelerated_networks(parts, "tiny", tmp_path)
    assert networks.parts == dict.fromkeys(PARTS)
    info = dr.runtime_info(networks)
    assert info["unet"] == {"runtime": "torch", "exported": [], "runtimes": {}, "fallbacks": []}


def test_other_weights_do_not_find_the_exported_files(exported, tiny_repo):
    parts, cache = exported
    repo, taesd = tiny_repo
    other = load_parts(repo, taesd_id=taesd, device="cpu")
    with torch.no_grad():
        other.unet.conv_in.weight.add_(0.01)  # a fine-tune of the same architecture
    fast = dr.accelerated_networks(other, "tiny", cache)
    assert fast.parts["unet"] is None and fast.parts["taesd_encoder"] is not None  # the same TAESD still does
    assert fingerprint(parts.unet) == fingerprint(load_parts(repo, taesd_id=taesd, device="cpu").unet)


def test_export_engines_writes_what_serve_finds(tiny_repo, tmp_path, monkeypatch):
    """`camfx export engines --diffusion` -> `camfx serve`'s DiffusionModels: the exported files
    are used, and the TensorRT plans it would build are the ones serve would load."""
    from camfx.engine.diffusion.served import DiffusionModels, DiffusionModelSpec
    from camfx.engine.runtimes.cache import plan_path
    from camfx.export import engines
    from camfx.export.tensorrt import plan_key

    built = []

    def build_plan(name, source, plan, *, fp16, directory, progress):  # what TensorRT would write
        path = plan_path(plan_key(name, source, plan, "fp16", "10.13.0", "gpu"), directory)
        path.write_bytes(b"plan")
        built.append(path)
        return path

    monkeypatch.setattr(engines, "build_plan", build_plan)
    repo, taesd = tiny_repo
    argv = ["--cache", str(tmp_path), "--diffusion", "--model", repo, "--taesd", taesd, "--size", "64",
            "--size", "64x128", "--device", "cpu"]
    assert engines.main(argv) == 0
    assert len(built) == 2 + 3 * 2  # two segmentation models; three parts at two sizes

    models = DiffusionModels({"tiny": DiffusionModelSpec(repo, taesd_id=taesd)}, cache=tmp_path)
    model = models.load("tiny")
    stylizer = Stylizer(model.parts, model.networks, prompt="a cat", steps=2)
    stylizer.img2img(_frames(1, 64, 128)[0])
    runtimes = models.runtimes()["tiny"]
    assert {part: runtimes[part]["runtime"] for part in PARTS} == dict.fromkeys(PARTS, CPU)
    assert runtimes["unet"]["exported"] == ["64x128", "64x64"]

    # Where TensorRT is there, serve's chain starts with the plan export built, for each part.
    directory = export_dir(tmp_path)
    monkeypatch.setattr(dr, "tensorrt_available", lambda: True)
    for path in directory.glob("*.json"):
        part, rest = path.stem.split("-", 1)
        size = tuple(int(v) for v in rest.split("_")[1].split("x"))
        record = ExportRecord.find(directory, part, rest.split("_")[0], *size)
        assert plan_path(record.plan_key("10.13.0", "gpu"), tmp_path) in built
        chain = dr.default_chain(record, directory, torch.device("cuda"), Candidate("torch", lambda: None),
                                 ("10.13.0", "gpu"), cache=tmp_path)
        assert chain[0].name == "tensorrt" and chain[-1].name == "torch"
        assert CPU not in [c.name for c in chain]  # never onnxruntime on the CPU for a GPU model


async def test_healthz_says_which_runtime_serves_each_diffusion_part(exported, tiny_repo, tmp_path, monkeypatch):
    import aiohttp

    from camfx.engine.config import ServerConfig
    from camfx.engine.diffusion.served import DiffusionModelSpec

    from ..conftest import start_server

    _, cache = exported
    shutil.copytree(cache, tmp_path / "engines")  # where serve's cache is, under $CAMFX_CACHE
    monkeypatch.setenv("CAMFX_CACHE", str(tmp_path))
    repo, taesd = tiny_repo
    runner, server = await start_server(ServerConfig(diffusion_models={"tiny": DiffusionModelSpec(repo, taesd_id=taesd)}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                health = await resp.json()
                assert health["diffusion_runtimes"] == {}  # nothing loaded, torch not imported
                assert health["diffusion"] == {"streams": 0, "busy_share": 0.0, "batches_per_s": 0.0,
                                               "mean_batch_size": None, "batches": 0}  # the scheduler
            model = server.hub.diffusion_models.load("tiny")
            Stylizer(model.parts, model.networks, prompt="a cat").img2img(_frames(1)[0])
            async with http.get(f"{server.url}/healthz") as resp:
                runtimes = (await resp.json())["diffusion_runtimes"]["tiny"]
        for part in PARTS:
            assert runtimes[part]["runtime"] == CPU and runtimes[part]["exported"] == [f"{SIZE}x{SIZE}"]
            assert runtimes[part]["runtimes"] == {f"{SIZE}x{SIZE}": CPU} and runtimes[part]["fallbacks"] == []
    finally:
        await runner.cleanup()
