"""Check the layer and no-cycle contracts of `.importlinter` with import-linter.

import-linter (grimp) does not see namespace packages, and `datasets/` must stay one (a regular
package of that name would shadow Hugging Face's `datasets` when the repository root is on
sys.path). So this builds, in a temporary folder, the package tree that pyproject's package-dir
mapping describes, as links to the real files plus an empty `__init__.py` where a folder has none,
and runs `lint-imports` on it. Usage: `python tools/check_layers.py [CHECKOUT]`. Exit status: import-linter's (non-zero when a contract is broken).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def link_tree(root: Path, dest: Path) -> None:
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    for package in setuptools["packages"]:
        parent = next(p for p in sorted(folders, key=len, reverse=True) if package == p or package.startswith(p + "."))
        source = root / folders[parent] / Path(*package[len(parent):].split(".")[1:])
        target = dest / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            (target / module.name).symlink_to(module)
        (target / "__init__.py").touch()  # a no-op where the link already exists


def main(root: Path = ROOT) -> int:
    """Check the checkout at `root` (default: this script's own)."""
    with tempfile.TemporaryDirectory(prefix="sourcetrace-layers-") as tmp:
        link_tree(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [str(Path(sys.executable).with_name("lint-imports")), str(root / ".importlinter"), "--no-cache"]
        return subprocess.call(command, env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
