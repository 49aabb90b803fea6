"""The `camfx` command as people use it: help, version, flags with their ranges, and expected
failures (a port in use, a missing extra, a bad value) as one clear line, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from camfx.bench.latency import free_port
from camfx.engine import cli, param_flags, serve
from camfx.engine.params import Params

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def camfx(*args: str, block: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `python -m camfx ARGS`; `block` names a module made unimportable, as if not installed."""
    code = "import sys, runpy; sys.argv = ['camfx', *sys.argv[1:]]; "
    if block:
        code += f"sys.modules[{block!r}] = None; "
    code += "runpy.run_module('camfx', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("camfx:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_help_lists_every_command_with_one_line(args):
    result = camfx(*args)
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert any(line.strip().startswith(name + " ") for line in result.stdout.splitlines()), result.stdout


@pytest.mark.parametrize("args", [["bench"], ["bench", "--help"]])
def test_bench_lists_every_benchmark_with_what_it_measures(args):
    from camfx.bench.cli import BENCHMARKS

    result = camfx(*args)
    text = result.stdout + result.stderr
    for name, (what, _, _) in BENCHMARKS.items():
        assert any(line.split() == [name, *what.split()] for line in text.splitlines()), text
        assert len(what) > 20


def test_install_hints_name_the_package_one_way():
    """`pip install 'camfx[x]'` everywhere: never `.[x]`, which works only in a clone. The one
    exception is the README's paths, which start from a fresh clone and say so by installing
    into the clone's own venv: `.venv/bin/pip install '.[x]'`."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    files = [p for folder in ("engine", "bench", "export", "models", "demo", "docs") for p in (root / folder).rglob("*")
             if p.suffix in (".py", ".js", ".html", ".md")] + [root / "README.md", root / "DESIGN.md"]
    offenders = [f"{p.name}: {m.group(0)}" for p in files for m in re.finditer(r"(?<!\.venv/bin/)pip install [^\n]*'\.\[", p.read_text())]
    assert not offenders, offenders


def test_version_from_the_command_and_from_python_m():
    from camfx import __version__

    assert camfx("--version").stdout.strip() == f"camfx {__version__}"
    direct = subprocess.run([sys.executable, "-m", "camfx", "--version"], capture_output=True, text=True)
    assert direct.returncode == 0 and direct.stdout.strip() == f"camfx {__version__}"


def test_unknown_command_says_so():
    result = camfx("srve")
    assert result.returncode == 2 and "unknown command 'srve'" in result.stderr


def test_every_flag_has_help_and_every_bounded_param_its_range():
    text = camfx("serve", "--help").stdout
    for name, info in Params.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text
        if param_flags._range(info):
            assert param_flags._range(info) in " ".join(text.split()), name
    assert "range [1.0, 50.0]" in " ".join(text.split())  # blur_strength


def test_a_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_clear_line(camfx("serve", "--port", str(port)))
    assert f"port {port}" in line and "in use" in line


@pytest.mark.parametrize("args, block, expected", [
    (["export", "selfie"], "torch", "pip install 'camfx[export]'"),
    (["serve", "--device", "cuda"], "torch", "pip install 'camfx[gpu]'"),
    (["cluster", "status"], "ray", "pip install 'camfx[cluster]'"),
    (["bench", "diffusion", "--frames", "1", "--out", "/nonexistent"], "torch", "pip install 'camfx[bench,diffusion]'"),
])
def test_a_missing_extra_is_one_line(args, block, expected):
    assert expected in one_clear_line(camfx(*args, block=block))


@pytest.mark.parametrize("args, expected", [
    (["serve", "--blur-strength", "99"], "blur_strength"),
    (["serve", "--max-sessions", "0"], "must be above 0"),
    (["serve", "--opencv-threads", "0"], "must be above 0"),
    (["serve", "--effect", "sepia"], "invalid choice"),
    (["serve", "--port", "99999"], "argument --port: a port is a whole number from 1 to 65535"),
    (["serve", "--port", "-1"], "argument --port: a port is a whole number from 1 to 65535"),
    (["serve", "--media-timeout", "nan"], "argument --media-timeout: must be above 0"),
    (["serve", "--max-viewers", "many"], "argument --max-viewers: must be a number above 0"),
    # What the schema cannot know would refuse every session (a 422) once started: the start stops.
    (["serve", "--effect", "replace", "--background-image", "nosuch"],
     "argument --background-image: no bundled image 'nosuch'; pick one of library, lights, office, studio, sunset"),
    (["serve", "--diffusion-model", "nosuch"], "argument --diffusion-model: this server does not serve 'nosuch'"),
    (["cluster", "up", "--port", "99999"], "argument --port: a port is a whole number from 1 to 65535"),
    (["cluster", "up", "--background-image", "nosuch"], "argument --background-image"),
    (["camera", "--fps", "0"], "argument --fps: must be above 0"),
])
def test_bad_values_are_refused_with_the_flag_named(args, expected):
    result = camfx(*args)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, not a page of usage


def test_all_interfaces_prints_urls_people_can_open(capsys):
    serve.print_urls("0.0.0.0", 8080)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8080/" in out and "https" in out  # and why another machine needs https


def serve_and_get(*extra: str) -> str:
    """Start `camfx serve`, GET /healthz once, stop it; what it logged."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "camfx", "serve", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "camfx serve did not come up"
                time.sleep(0.2)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output  # SIGTERM is a clean stop
    return output


def test_access_logs_are_off_unless_asked_for():
    assert "GET /healthz" not in serve_and_get()
    assert "GET /healthz" in serve_and_get("--access-log")


@pytest.mark.parametrize("args, expected", [
    (["--ice-server", "http://stun.example"], "not a STUN or TURN URL"),
    (["--ice-server", "turn:turn.example:3478"], "--ice-username"),
    (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
])
def test_bad_exposure_settings_are_one_line(args, expected):
    assert expected in one_clear_line(camfx("serve", *args))


def test_a_self_signed_certificate_is_made_kept_and_its_fingerprint_printed(tmp_path):
    import os

    port = free_port()
    env = {**os.environ, "CAMFX_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "camfx", "serve", "--port", str(port), "--tls", "self-signed"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        while not any("SHA-256" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    text = "".join(lines)
    assert f"https://127.0.0.1:{port}/" in text
    assert (tmp_path / "tls" / "self-signed.pem").is_file()
    from camfx.engine.transport import tls

    assert tls.fingerprint(tmp_path / "tls" / "self-signed.pem") in text


def test_the_hub_sets_opencv_threads_for_the_process():
    import cv2

    from camfx.engine.config import ServerConfig
    from camfx.engine.hub import Hub

    before = cv2.getNumThreads()
    hub = Hub(ServerConfig(opencv_threads=3, device="cpu"))
    try:
        assert cv2.getNumThreads() == 3
        assert ServerConfig().opencv_threads == 1  # the default: sessions share the cores instead
    finally:
        hub.shutdown()
        cv2.setNumThreads(before)


def test_bench_idle_reports_every_call_first_again_and_back_to_back(tmp_path):
    import json

    from camfx.bench import idle

    result = camfx("bench", "idle", "--rounds", "2", "--idle-ms", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "idle.json").read_text())
    assert [row["call"] for row in data["calls"]] == [name for name, _ in idle.calls()]
    for row in data["calls"]:
        assert row["first_us"] > 0 and row["again_us"] > 0 and row["back_to_back_us"] > 0
    bad = camfx("bench", "idle", "--rounds", "0")
    assert bad.returncode == 2 and "--rounds" in bad.stderr
