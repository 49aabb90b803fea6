"""bench/gpu_check.sh cannot rot: its dry run does every part on the CPU with the tiny models,
and what a GPU call would carry and bring back is checked here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
WHEELS = ROOT / "bench" / "gpu_wheels.txt"
CARRY_LIMIT = 64 * 1024 * 1024


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=420)


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_wheel_list_is_pinned_and_fits_a_call():
    specs, sizes = [], []
    for line in WHEELS.read_text().splitlines():
        spec, _, comment = line.partition("#")
        if spec.strip():
            specs.append(spec.strip())
            size = re.match(r"\s*(\d+)\s+\S+\.whl", comment)
            assert size, f"no size for {spec.strip()}: {line!r}"
            sizes.append(int(size.group(1)))
    assert specs, "no wheels listed"
    for spec in specs:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", spec), spec
    names = [s.split("==")[0].lower() for s in specs]
    assert len(names) == len(set(names)), "a wheel listed twice"
    for needed in ("aiortc", "av", "diffusers", "streamdiffusion", "pydantic"):
        assert needed in names
    # What a call carries: the files git tracks or would track (ignored ones stay behind).
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    tree = sum((ROOT / name).stat().st_size for name in listed if (ROOT / name).is_file())
    # the camfx wheel itself is about 1 MB; leave it 4 MB
    assert sum(sizes) + tree + 4 * 1024 * 1024 < CARRY_LIMIT


def test_dry_run_does_every_part_and_packs_the_results(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    done = _run(tmp_path, "--dry-run", str(results), OUT=str(out))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((results / "summary.json").read_text())
    assert summary["mode"] == "dry"
    assert [p["name"] for p in summary["parts"]] == ["install", "env", "doctor", "runtimes", "webrtc", "sessions",
                                                      "diffusion"]
    assert {p["status"] for p in summary["parts"]} == {"passed"}
    env = json.loads((results / "env.json").read_text())
    assert env["missing"] == [] and "camfx" in env["modules"]
    runtimes = json.loads((results / "runtimes.json").read_text())
    assert runtimes, "no runtime rows"
    latency = json.loads((results / "latency.json").read_text())
    assert latency["results"], "no latency rows"
    diffusion = json.loads((results / "diffusion.json").read_text())
    assert "streamdiffusion" in json.dumps(diffusion).lower()  # the reference ran in the same run
    sessions = json.loads((results / "diffusion-sessions.json").read_text())
    assert {row["policy"] for row in sessions["real"]["rows"]} == {"fifo", "scheduler"}
    assert [row["batch"] for row in sessions["real"]["batch_scaling"]] == [1, 2]
    for name in ("healthz-before.json", "healthz-after.json", "latency.png"):
        assert (results / name).stat().st_size > 0
    assert json.loads((results / "healthz-after.json").read_text())["sessions"] == 0  # nothing left behind
    with tarfile.open(out / "gpu_check.tar.gz") as packed:
        names = packed.getnames()
    assert "results/summary.json" in names and "results/diffusion.json" in names
    assert (out / "gpu_check-summary.txt").read_text() == (results / "summary.txt").read_text()


@pytest.mark.parametrize("env, status", [({"GPU_CHECK_PARTS": "doctor nosuchpart"}, "failed"),
                                         ({"GPU_CHECK_PARTS": "doctor", "GPU_CHECK_TOTAL": "4"}, "skipped")])
def test_a_part_that_does_not_pass_fails_the_run(tmp_path, env, status):
    done = _run(tmp_path, "--dry-run", str(tmp_path / "r"), **env)
    assert done.returncode == 1
    parts = json.loads((tmp_path / "r" / "summary.json").read_text())["parts"]
    assert parts[-1]["status"] == status
