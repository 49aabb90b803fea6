"""`.ci/tests`, the suite's runner in CI: progress a line per file, and an exit status that is 0
only when tests ran and passed in time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def ci_tests(folder: Path, body: str, minutes: str = "15") -> subprocess.CompletedProcess:
    (folder / "test_sample.py").write_text("import time\nimport pytest\n\n" + body)
    (folder / "test_other.py").write_text("def test_fine():\n    pass\n" if "skip" not in body else
                                          "import pytest\n\n@pytest.mark.skip('here')\ndef test_fine():\n    pass\n")
    return subprocess.run([str(ROOT / ".ci" / "tests"), str(folder), "-p", "no:cacheprovider"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CAMFX_CI_MINUTES": minutes})


def test_passing_tests_show_a_line_per_file_and_pass(tmp_path):
    result = ci_tests(tmp_path, "def test_one():\n    pass\n")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("test_other.py", "test_sample.py"):  # pytest's progress: a line per file
        assert any(f"{name} ." in line and "%]" in line for line in lines), result.stdout
    assert "2 tests ran" in result.stdout


@pytest.mark.parametrize("body, why", [
    ("def test_one():\n    assert False\n", "failed"),
    ("@pytest.mark.skip('here')\ndef test_one():\n    pass\n", "no test ran"),
])
def test_a_failure_or_no_test_run_is_not_a_pass(tmp_path, body, why):
    result = ci_tests(tmp_path, body)
    assert result.returncode != 0 and why in result.stdout + result.stderr, result.stdout


def test_a_suite_past_its_time_stops_and_fails(tmp_path):
    result = ci_tests(tmp_path, "def test_slow():\n    time.sleep(60)\n", minutes="0.05")
    assert result.returncode == 124 and "ran past 0.05 minutes" in result.stderr, result.stdout + result.stderr
