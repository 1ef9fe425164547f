"""Type-check the library with mypy and fail on any error that tools/mypy-baseline.txt does not hold.

mypy must see one package, `sourcetrace`, over the top-level folders (pyproject's package-dir
mapping), so it runs on the link tree of tools/check_layers.py, built in .mypy_cache (which mypy
keeps out of git) so that its cache stays valid between runs. An error is matched on its file and
message, without the line number, so that edits elsewhere in a file do not break the check; a
message that occurs n times in a file is n entries. `--update` writes today's errors as the baseline
(do it when the list shrinks, never to let a new error in).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from check_layers import link_tree

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tools" / "mypy-baseline.txt"
CACHE = ROOT / ".mypy_cache"
ERROR = re.compile(r"^(?P<file>[^:\n]+\.pyi?):(?P<line>\d+): error: (?P<message>.*)$")


def mypy_errors() -> list[tuple[str, int, str]]:
    """(repository file, line, message) of each error mypy reports on the library."""
    tree = CACHE / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    link_tree(ROOT, tree)
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
                           str(CACHE), "--no-error-summary", "--show-absolute-path", "-p", "sourcetrace"],
                          cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        sys.exit(f"mypy failed (exit status {done.returncode}):\n{done.stdout}{done.stderr}")
    errors = []
    for line in done.stdout.splitlines():
        if match := ERROR.match(line):
            file = Path(match["file"]).resolve().relative_to(ROOT).as_posix()  # through the link to the real file
            errors.append((file, int(match["line"]), match["message"]))
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write today's errors to tools/mypy-baseline.txt")
    args = parser.parse_args()
    errors = mypy_errors()
    today = Counter(f"{file}: {message}" for file, _, message in errors)
    if args.update:
        BASELINE.write_text("".join(f"{entry}\n" for entry in sorted(today.elements())))
        print(f"{BASELINE.relative_to(ROOT)}: {len(errors)} entries")
        return 0
    baseline = Counter(BASELINE.read_text().splitlines())
    new = today - baseline
    gone = sum((baseline - today).values())
    for file, line, message in errors:
        if new[f"{file}: {message}"]:
            print(f"{file}:{line}: error: {message}")
    if new:
        print(f"{sum(new.values())} mypy errors not in {BASELINE.relative_to(ROOT)}: fix them (the baseline only shrinks)")
        return 1
    print(f"mypy: no new errors ({len(errors)} known in the baseline"
          + (f"; {gone} baseline entries are gone: shrink it with `python tools/check_types.py --update`)" if gone else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
