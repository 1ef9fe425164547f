"""Rehearse perf/gpu_check.py on this machine as on a stock PyTorch GPU image.

`image OUT_DIR [--with-wheel-list]` links into OUT_DIR the packages the device's image has
(tools/gpu-image-packages.txt), as installed in this environment; with `--with-wheel-list` also
those of tools/gpu-wheels.txt and grad-tts, which tools/gpu-wheels.sh brings to the device. A
bare virtual environment with PYTHONPATH=<sourcetrace installed with --target>:OUT_DIR then
imports nothing else, so a module the check needs that neither the image nor the wheel list holds
fails here, not on the device.

`wheel OUT_DIR` builds sourcetrace's wheel from a copy of the working tree as the device tool
carries it (tracked files and untracked ones git does not ignore): no stale `build/` leftovers.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

IMAGE_PACKAGES = Path(__file__).with_name("gpu-image-packages.txt")
WHEEL_LIST = Path(__file__).with_name("gpu-wheels.txt")
BUILT_BY_THE_WHEEL_SCRIPT = ("grad-tts",)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(listing: Path) -> list[str]:
    """The distribution names of a requirements-style list (one a line, # comments)."""
    lines = (line.strip() for line in listing.read_text().splitlines())
    return [Requirement(line).name for line in lines if line and not line.startswith("#")]


def closure(names) -> set[str]:
    """The installed distributions among `names` and everything they require (no extras)."""
    seen: set[str] = set()
    todo = [_normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_normal(requirement.name))
    return seen


def link(distributions: set[str], out_dir: Path) -> None:
    """Symbolic links in `out_dir` to each distribution's top-level files and folders."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(distributions):
        dist = metadata.distribution(name)
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or ()}):
            source = Path(str(dist.locate_file(top)))
            target = out_dir / top
            if top in ("..", "__pycache__", "bin") or top.endswith(".pth") or not source.exists() or target.exists():
                continue
            os.symlink(source, target)


def build_wheel(out_dir: Path) -> Path:
    """sourcetrace's wheel, built (offline, with this environment's setuptools) from a clean copy."""
    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           check=True, capture_output=True).stdout.decode().split("\0")
    with tempfile.TemporaryDirectory(prefix="sourcetrace-tree-") as tree, \
            tempfile.TemporaryDirectory(prefix="sourcetrace-wheel-") as built:
        for name in filter(None, files):
            if (root / name).is_file():  # a deleted file git still tracks is not copied
                (Path(tree) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, Path(tree) / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", tree,
                        "-w", built], check=True, capture_output=True)
        (wheel,) = Path(built).glob("sourcetrace-*.whl")
        out_dir.mkdir(parents=True, exist_ok=True)
        for older in out_dir.glob("sourcetrace-*.whl"):  # two versions would stop the install there
            older.unlink()
        return Path(shutil.move(str(wheel), out_dir / wheel.name))


def link_image(out_dir: Path, with_wheel_list: bool) -> int:
    """Link the image's packages that are installed here (and the wheel list's, which must be) into
    `out_dir`; how many distributions."""
    # What the image lists, as installed here, and what those versions need here (versions differ).
    distributions = closure(requirement_names(IMAGE_PACKAGES))
    if with_wheel_list:  # as wheels, installed without their dependencies
        wheels = {_normal(n) for n in requirement_names(WHEEL_LIST) + list(BUILT_BY_THE_WHEEL_SCRIPT)}
        missing = wheels - closure(wheels)  # closure keeps only what is installed here
        if missing:
            raise SystemExit(f"not installed here, so not linked: {', '.join(sorted(missing))}")
        distributions |= wheels
    link(distributions, out_dir)
    return len(distributions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="link the stock image's packages into OUT_DIR")
    image.add_argument("out_dir")
    image.add_argument("--with-wheel-list", action="store_true",
                       help="also the packages tools/gpu-wheels.sh brings (offline: from this environment)")
    wheel = sub.add_parser("wheel", help="build sourcetrace's wheel into OUT_DIR from a clean copy of the tree")
    wheel.add_argument("out_dir")
    args = parser.parse_args()
    if args.command == "image":
        print(f"{link_image(Path(args.out_dir), args.with_wheel_list)} distributions linked into {args.out_dir}")
    else:
        print(build_wheel(Path(args.out_dir)))


if __name__ == "__main__":
    main()
