"""The import layers (pyproject's [tool.importlinter] contracts) hold: models know nothing of the
engine, serving never imports export, and inside the engine each layer imports only those below.

import-linter reads a package from one folder, while camfx's parts live in folders of their own
(pyproject's `packages` and `package-dir` map them onto `camfx.*`), so the test lays the modules
out as `pip install` does, by that same mapping, in a temporary folder, and lints that. Every
package folder in the tree must be in the mapping: one left out would not be installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folder(package: str) -> Path:
    """Where setuptools takes `package` from: its nearest mapped parent's folder, then the rest."""
    mapped = SETUPTOOLS.get("package-dir", {})
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        parent = ".".join(parts[:cut])
        if parent in mapped:
            return ROOT.joinpath(mapped[parent], *parts[cut:])
    return ROOT.joinpath(*parts)


def test_every_package_folder_is_installed():
    listed = {package_folder(p).resolve() for p in SETUPTOOLS["packages"]}
    folders = {init.parent.resolve() for part in ("engine", "models", "export", "bench", "demo")
               for init in (ROOT / part).rglob("__init__.py")}
    assert sorted(map(str, folders - listed)) == [], "add these to pyproject's [tool.setuptools] packages"


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    for package in SETUPTOOLS["packages"]:
        target = root.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in package_folder(package).glob("*.py"):
            shutil.copyfile(module, target / module.name)
    return root


def lint(layout: Path, config: Path) -> subprocess.CompletedProcess:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint_imports), str(config)], cwd=layout, capture_output=True, text=True,
                          env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_import_layers_hold(installed_layout):
    result = lint(installed_layout, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert f"Contracts: {contracts} kept, 0 broken." in result.stdout


def test_a_broken_layer_is_caught(installed_layout, tmp_path):
    """The contracts can fail: a lower-layer module that imports the stream breaks them."""
    params = installed_layout / "camfx" / "engine" / "params.py"
    original = params.read_text()
    params.write_text(original + "\nfrom .stream import Stream  # noqa\n")
    try:
        result = lint(installed_layout, ROOT / "pyproject.toml")
    finally:
        params.write_text(original)
    assert result.returncode != 0 and "camfx.engine.params -> camfx.engine.stream" in result.stdout
