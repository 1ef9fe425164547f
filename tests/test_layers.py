"""The layer contracts (`.importlinter`, run by `tools/check_layers.py` in CI) catch what they promise
to: an import from a lower layer to a higher one, and an import cycle, each in a scratch copy of the
package sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("src", "attribution", "benchmark", "checkpoints", "datasets", "generators", "vocoders")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The package sources, pyproject.toml and .importlinter, copied (Python files only)."""
    for name in ("pyproject.toml", ".importlinter", "tools/check_layers.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.toml", "*.tsv",
                                                                                         "*.json", "*.yaml", "*.md"))
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "tools" / "check_layers.py"), str(root)],
                          capture_output=True, text=True, timeout=120)


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_the_layers_hold(checkout):
    result = _check(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_build(checkout):
    _append(checkout / "src/sourcetrace/core/errors.py", "from sourcetrace.pipeline import study  # noqa")
    result = _check(checkout)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "sourcetrace.core.errors -> sourcetrace.pipeline.study" in result.stdout


def test_an_upward_import_from_the_namespace_package_breaks_the_build(checkout):
    # datasets/ has no __init__.py (see tools/check_layers.py): import-linter alone would not see it
    _append(checkout / "datasets/prompts.py", "import sourcetrace.generators.base  # noqa")
    result = _check(checkout)
    assert result.returncode != 0
    assert "sourcetrace.datasets.prompts -> sourcetrace.generators.base" in result.stdout


def test_an_import_cycle_breaks_the_build(checkout):
    # two modules of one layer importing each other: the layers contract allows it, the acyclic one does not
    _append(checkout / "src/sourcetrace/core/mel.py", "import sourcetrace.core.device  # noqa")
    _append(checkout / "src/sourcetrace/core/device.py", "import sourcetrace.core.mel  # noqa")
    result = _check(checkout)
    assert result.returncode != 0
    assert "No import cycles" in result.stdout and "BROKEN" in result.stdout
