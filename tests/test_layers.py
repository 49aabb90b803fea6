"""The import layers (pyproject's [tool.importlinter] contracts) hold: models know nothing of the
engine, serving never imports export, and inside the engine each layer imports only those below.

import-linter reads a package from one folder, while camfx's parts live in folders of their own
(pyproject maps them onto `camfx.*`), so the test lays the sources out as an installed wheel
would, in a temporary folder, and lints that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("engine", "models", "export", "bench", "demo")


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    package = root / "camfx"
    package.mkdir()
    (package / "__init__.py").write_text((ROOT / "engine" / "toplevel" / "__init__.py").read_text())
    ignore = shutil.ignore_patterns("__pycache__", "toplevel", "*.onnx", "*.jpg", "*.js", "*.css", "*.html")
    for part in PARTS:
        shutil.copytree(ROOT / part, package / part, ignore=ignore)
    return root


def lint(layout: Path, config: Path) -> subprocess.CompletedProcess:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint_imports), str(config)], cwd=layout, capture_output=True, text=True,
                          env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_import_layers_hold(installed_layout):
    result = lint(installed_layout, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_broken_layer_is_caught(installed_layout, tmp_path):
    """The contracts can fail: a lower-layer module that imports the stream breaks them."""
    effects = installed_layout / "camfx" / "engine" / "effects.py"
    original = effects.read_text()
    effects.write_text(original + "\nfrom .stream import Stream  # noqa\n")
    try:
        result = lint(installed_layout, ROOT / "pyproject.toml")
    finally:
        effects.write_text(original)
    assert result.returncode != 0 and "camfx.engine.effects -> camfx.engine.stream" in result.stdout
