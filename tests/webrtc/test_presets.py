"""Presets (a named set of params in the user's config folder) through the store, the HTTP API
and `--preset`, and the page metadata in `GET /params/schema`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from camfx.engine.config import ServerConfig
from camfx.engine.param_flags import add_param_flags, params_from_args
from camfx.engine.param_ui import GROUPS, OTHER, schema_with_ui, ui_metadata
from camfx.engine.params import Params, ParamsError
from camfx.engine.presets import MAX_PRESETS, PresetError, PresetStore, default_path

from ..conftest import start_server

pytestmark = pytest.mark.webrtc


def test_store_round_trip_normalises_and_keeps_only_the_fields_set(tmp_path):
    store = PresetStore(tmp_path / "camfx" / "presets.json")
    assert store.all() == {}
    saved = store.put("studio look", {"effect": "replace", "background_color": "#AABBCC", "blur_strength": "20"})
    assert saved == {"effect": "replace", "background_color": "#aabbcc", "blur_strength": 20.0}
    assert PresetStore(store.path).get("studio look") == saved  # on disk, for the next process
    assert json.loads(store.path.read_text())["studio look"] == saved
    store.delete("studio look")
    assert store.all() == {}


@pytest.mark.parametrize("name, params, what", [
    ("ok", {"blur_strength": 999}, "blur_strength"),
    ("ok", {"no_such_field": 1}, "no_such_field"),
    ("ok", {}, "expected a JSON object"),
    ("ok", [1, 2], "expected a JSON object"),
    ("../etc", {"effect": "blur"}, "bad preset name"),
    ("", {"effect": "blur"}, "bad preset name"),
])
def test_store_refuses_bad_presets(tmp_path, name, params, what):
    store = PresetStore(tmp_path / "presets.json")
    with pytest.raises((ParamsError, PresetError)) as info:
        store.put(name, params)
    assert what in str(info.value)
    assert not store.path.exists()


def test_store_caps_the_count_and_says_what_is_saved(tmp_path):
    store = PresetStore(tmp_path / "presets.json")
    for i in range(MAX_PRESETS):
        store.put(f"p{i}", {"effect": "blur"})
    with pytest.raises(PresetError) as info:
        store.put("one-more", {"effect": "blur"})
    assert info.value.status == 409
    store.put("p0", {"effect": "toon"})  # replacing one is fine
    with pytest.raises(PresetError) as info:
        store.get("nosuch")
    assert info.value.status == 404 and "p0" in str(info.value)


def test_default_path_is_in_the_xdg_config_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CAMFX_PRESETS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_path() == tmp_path / "camfx" / "presets.json"


def test_preset_flag_starts_from_the_preset_and_flags_win(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("CAMFX_PRESETS", str(tmp_path / "presets.json"))
    PresetStore().put("call", {"effect": "replace", "background": "color", "blur_strength": 30})
    parser = argparse.ArgumentParser()
    add_param_flags(parser)
    params = params_from_args(parser.parse_args(["--preset", "call", "--blur-strength", "7"]))
    assert (params.effect, params.background, params.blur_strength) == ("replace", "color", 7.0)
    with pytest.raises(ParamsError) as info:
        params_from_args(parser.parse_args(["--preset", "nosuch"]))
    assert info.value.errors[0]["field"] == "preset" and "call" in info.value.errors[0]["message"]


async def _json(session, method, url, **kwargs):
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json()


async def test_presets_api_saves_validates_and_serve_starts_with_one(tmp_path, monkeypatch):
    import aiohttp

    monkeypatch.setenv("CAMFX_PRESETS", str(tmp_path / "presets.json"))
    runner, server = await start_server()
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await _json(http, "PUT", server.url + "/presets/x",
                                       json={"effect": "toon", "toon_edges": 0.9})
            assert status == 200 and body["params"] == {"effect": "toon", "toon_edges": 0.9}
            status, body = await _json(http, "PUT", server.url + "/presets/y", json={"toon_edges": 7})
            assert status == 422 and body["errors"][0]["field"] == "toon_edges"
            status, body = await _json(http, "PUT", server.url + "/presets/y", data=b"x" * 20_000,
                                       headers={"Content-Type": "application/json"})
            assert status == 413
            status, body = await _json(http, "PUT", server.url + "/presets/-bad", json={"effect": "toon"})
            assert status == 400 and "bad preset name" in body["error"]
            status, body = await _json(http, "GET", server.url + "/presets")
            assert status == 200 and body == {"presets": {"x": {"effect": "toon", "toon_edges": 0.9}}}
            status, body = await _json(http, "GET", server.url + "/presets/x")
            assert status == 200 and body["effect"] == "toon"
            status, body = await _json(http, "DELETE", server.url + "/presets/nosuch")
            assert status == 404 and "error" in body
    finally:
        await runner.cleanup()

    # `camfx serve --preset x`: new sessions (and the page, through the schema) start with it.
    from camfx.bench.latency import free_port

    port = free_port()
    env = {**os.environ, "CAMFX_PRESETS": str(tmp_path / "presets.json")}
    proc = subprocess.Popen([sys.executable, "-m", "camfx", "serve", "--port", str(port), "--preset", "x"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        schema = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and schema is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/params/schema", timeout=2) as response:
                    schema = json.load(response)
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.3)
        defaults = schema["x-camfx-ui"]["defaults"]
        assert (defaults["effect"], defaults["toon_edges"]) == ("toon", 0.9)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # An unknown preset stops the start, in one line.
    result = subprocess.run([sys.executable, "-m", "camfx", "serve", "--port", str(port), "--preset", "nosuch"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no preset named 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "camfx", "camera", "--control", "off", "--preset", "nosuch"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no preset named 'nosuch' (saved: x)" in result.stderr


def test_schema_metadata_groups_every_field_once_and_puts_the_rest_in_other():
    fields = list(Params.model_fields)
    meta = ui_metadata(fields + ["brand_new"])
    placed = [f for g in meta["groups"] for f in g["fields"]]
    assert sorted(placed) == sorted(fields + ["brand_new"])
    assert [g["name"] for g in meta["groups"]][-1] == OTHER and meta["groups"][-1]["fields"] == ["brand_new"]
    assert "Face" in [g["name"] for g in meta["groups"]]
    # Fields a build lacks are left out, not published empty.
    face = next(g["fields"] for g in GROUPS if g["name"] == "Face")
    assert "Face" not in [g["name"] for g in ui_metadata([f for f in fields if f not in face])["groups"]]
    assert all(f in Params.model_fields or f in sum((g["fields"] for g in GROUPS), []) for f in meta["when"])
    # The mask's fields follow the pipeline's rule.
    model_when = meta["when"]["model"]
    assert {"effect": ["blur", "replace", "remove"]} in model_when


def test_schema_says_when_diffusion_cannot_run():
    assert schema_with_ui(diffusion_specs={})["x-camfx-ui"]["unavailable"]["diffusion"]
    remote = schema_with_ui(check_diffusion=False)["x-camfx-ui"]
    assert remote["unavailable"] == {} and "diffusion_models" not in remote
    served = schema_with_ui(defaults=Params(effect="toon"), diffusion_specs=ServerConfig().diffusion_models)
    assert served["x-camfx-ui"]["defaults"]["effect"] == "toon"
    assert served["x-camfx-ui"]["diffusion_models"] == sorted(ServerConfig().diffusion_models)
