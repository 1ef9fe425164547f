"""Compare two work folders of `sourcetrace run` (before and after a change): the proof a refactor owes.

Every file must be byte-identical, except the few whose bytes record when or how fast a run went;
those are compared on what they mean:
  results/*.json, site/results/*.json   equal once `provenance.created` is dropped
  stages/*.json                         equal once `seconds` is dropped
  corpus/features/audio-sha256.json     the same sha256 for every clip (inode, mtime and hashing time vary)
  runs/*/resume/*/trainer.pt            the same tensors and values (torch.save names the archive after the
                                        temporary file and writes a random serialization id)
  runs/*/resume/*/manifest.json         equal once trainer.pt's sha256 is dropped
  runs/*/tensorboard/events.*           skipped (named by time and process id)
Prints a summary (the corpus manifest's sha256, the checkpoints' combined sha256, counts) and every
difference; exits 1 on any.

    python tools/compare_runs.py work/before work/after
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path


def _json_without(*keys: str) -> Callable[[Path], object]:
    """The JSON object without the `keys`, each a path of names joined by / (e.g. provenance/created)."""
    def load(path: Path) -> object:
        obj = json.loads(path.read_text(encoding="utf-8"))
        for key in keys:
            *parents, last = key.split("/")
            inner = obj
            for name in parents:
                inner = inner.get(name, {}) if isinstance(inner, dict) else {}
            if isinstance(inner, dict):
                inner.pop(last, None)
        return obj
    return load


def _hash_cache(path: Path) -> object:
    return {clip: entry["sha256"] for clip, entry in json.loads(path.read_text(encoding="utf-8")).items()}


def _torch_state(path: Path) -> object:
    import torch  # only where a run has resume points

    def plain(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", str(value.dtype), tuple(value.shape), hashlib.sha256(value.cpu().numpy().tobytes()).hexdigest())
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value
    return plain(torch.load(path, map_location="cpu", weights_only=True))


# (pattern, how to read what a file means); the first match wins, anything else is compared byte for byte
MEANING: list[tuple[str, Callable[[Path], object] | None]] = [
    ("results/*.json", _json_without("provenance/created")),
    ("site/results/*.json", _json_without("provenance/created")),
    ("stages/*.json", _json_without("seconds")),
    ("corpus/features/audio-sha256.json", _hash_cache),
    ("runs/*/resume/*/trainer.pt", _torch_state),
    ("runs/*/resume/*/manifest.json", _json_without("sha256/trainer.pt")),
    ("runs/*/tensorboard/*", None),
]


@functools.cache  # the summary asks again for files the comparison hashed
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rule(relative: str) -> tuple[bool, Callable[[Path], object] | None]:
    for pattern, meaning in MEANING:
        if fnmatch(relative, pattern):
            return True, meaning
    return False, None


def compare(before: Path, after: Path) -> tuple[list[str], dict[str, object]]:
    """(differences, summary) of two work folders."""
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    left, right = files(before), files(after)
    differences = [f"only in {before}: {f}" for f in sorted(left - right) if _rule(f) != (True, None)]
    differences += [f"only in {after}: {f}" for f in sorted(right - left) if _rule(f) != (True, None)]
    identical = by_meaning = 0
    for relative in sorted(left & right):
        a, b = before / relative, after / relative
        if _sha256(a) == _sha256(b):
            identical += 1
            continue
        listed, meaning = _rule(relative)
        if listed and meaning is None:
            continue
        if listed and meaning is not None:
            try:
                same = meaning(a) == meaning(b)
            except Exception as exc:  # noqa: BLE001 - an unreadable file is a difference, said with why
                differences.append(f"differs: {relative} (unreadable: {type(exc).__name__}: {exc})")
                continue
            if same:
                by_meaning += 1
                continue
        differences.append(f"differs: {relative}")
    checkpoints = sorted(f for f in left & right if fnmatch(f, "runs/*/checkpoints/*/model.safetensors"))
    combined = hashlib.sha256("".join(f"{_sha256(after / f)}  {f}\n" for f in checkpoints).encode()).hexdigest()
    manifest = after / "corpus" / "manifest.csv"
    summary = {"files": len(right), "byte-identical": identical, "equal in meaning": by_meaning,
               "clips": sum(1 for f in right if f.startswith("corpus/audio/")),
               "corpus manifest sha256": _sha256(manifest) if manifest.is_file() else None,
               "checkpoints": len(checkpoints), "checkpoints' combined sha256": combined,
               "results": sum(1 for f in right if fnmatch(f, "results/*.json"))}
    return differences, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not folder.is_dir():
            parser.error(f"{folder}: no such folder (give two work folders of `sourcetrace run`)")
    differences, summary = compare(args.before, args.after)
    for key, value in summary.items():
        print(f"{key}: {value}")
    for line in differences:
        print(line)
    print(f"{len(differences)} difference(s)" if differences else "identical (volatile files equal in meaning)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
