"""Results files: one JSON per (protocol, attributor, extractor, corpus), versioned and validated."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from sourcetrace.attribution.unknown import check_threshold_rule
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.schema import OPEN_SET, PER_SEED, RESULT, check
from sourcetrace.core.schema import problems as schema_problems

SCHEMA_VERSION = 1
# The largest results file read (leaderboards load every file whole; a Table-1 result is ~0.1 MiB,
# one with 1,000 classes' confusion matrices a few MiB).
MAX_RESULT_BYTES = 16 * 2**20
NUMBER_TOLERANCE = 1e-9  # |stored - recomputed| allowed for mean and std (float rounding only)
PACKAGES = ("sourcetrace", "torch", "numpy", "scikit-learn", "transformers", "scipy")


class ResultError(SourcetraceError, ValueError):
    pass


def result_paths(items) -> list[Path]:
    """Results files, each given as a file or as a folder of them (its *.json, sorted)."""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return files


def file_slug(text: str) -> str:
    """A file-name-safe form of a name users write."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def result_file_name(protocol: str, attributor_id: str, extractor: str, transform: str | None = None) -> str:
    """Every part slugged: names come from files users write (protocols) or edit (results). A result
    under laundering (`transform`: its derived corpus's chain) sits beside the clean one."""
    laundered = f"__laundered-{file_slug(transform)}" if transform else ""
    return f"{file_slug(protocol)}__{file_slug(attributor_id)}__{file_slug(extractor)}{laundered}.json"


def laundered_by(result: dict) -> str | None:
    """The transform chain a result's query went through (`laundering.transform`); None for a clean result."""
    return result["laundering"]["transform"] if "laundering" in result else None


def result_name(result: dict) -> str:
    """The file name of a (schema-checked) result: result_file_name of its own fields."""
    return result_file_name(result["protocol"]["name"], result["attributor"]["id"], result["features"]["extractor"],
                            laundered_by(result))


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def seed_summary(per_seed: list[dict]) -> tuple[float, float]:
    """Mean and population std (ddof=0) over seeds of the per-seed macro F1; the entries of one
    seed (its vocoder variants) are averaged first, so std measures split-to-split spread."""

    by_seed: dict[int, list[float]] = {}
    for entry in per_seed:
        by_seed.setdefault(entry["seed"], []).append(entry["macro_f1"])
    seed_means = np.array([np.mean(v) for _, v in sorted(by_seed.items())])
    return float(seed_means.mean()), float(seed_means.std(ddof=0))


def number_problems(result: dict) -> list[str]:
    """What makes a (schema-checked) result's numbers unpublishable: per-seed values missing, repeated
    or outside 0..1, or a mean/std that its per-seed values do not give. Both the bare leaderboard
    and a board's `add` refuse on these."""
    problems = []
    seeds = result["seeds"]
    if not seeds or len(set(seeds)) != len(seeds):
        problems.append(f"seeds {seeds} must be a non-empty list without repeats")
    for level, entry in sorted(result["levels"].items()):
        try:
            check(entry["per_seed"], PER_SEED, f"levels.{level}.per_seed", ResultError)
        except ResultError as exc:
            problems.append(str(exc))
            continue
        variants: dict[int, list] = {}
        for item in entry["per_seed"]:
            variants.setdefault(item["seed"], []).append(item.get("variant"))
        if sorted(variants) != sorted(seeds):
            problems.append(f"{level}: per-seed values for seeds {sorted(variants)}, the result declares seeds {sorted(seeds)} "
                            "(an incomplete or padded seed list)")
        if any(len(set(v)) != len(v) for v in variants.values()) or len({tuple(sorted(map(str, v))) for v in variants.values()}) > 1:
            problems.append(f"{level}: every seed must have the same vocoder variants, each once")
        values = [item["macro_f1"] for item in entry["per_seed"]]
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            problems.append(f"{level}: a per-seed macro F1 is outside 0..1")
            continue
        mean, std = seed_summary(entry["per_seed"])
        for key, recomputed in (("mean", mean), ("std", std)):
            stored = entry[key]
            if not (math.isfinite(stored) and abs(stored - recomputed) <= NUMBER_TOLERANCE):
                problems.append(f"{level}: stored {key} {stored!r} is not the {recomputed!r} its per-seed values give")
    if "open_set" in result:
        problems += open_set_problems(result["open_set"])
    return problems


def open_set_problems(block) -> list[str]:
    """What makes a result's open-set block unpublishable: a key the leaderboard reads missing or of
    the wrong type, a rate not a number in 0..1 (core.schema.OPEN_SET), no score, or a threshold rule
    run_open_set would refuse (the block is hostile input, as the rest of a submitted result)."""
    problems = schema_problems(block, OPEN_SET, "open_set")
    if problems:
        return problems
    if not block["scores"]:
        problems.append("open_set.scores must be a non-empty table (one entry per out-of-domain score)")
    try:
        check_threshold_rule(block["threshold_rule"])
    except UsageError as exc:
        problems.append(f"open_set.threshold_rule: {exc}")
    return problems


def validate_result(obj, source: str = "<result>") -> dict:
    """Check a results object against its schema (sourcetrace.core.schema.RESULT); raise ResultError
    naming the file and the key."""
    if not isinstance(obj, dict):
        raise ResultError(f"{source}: not a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(f"{source}: schema_version {version!r}, this sourcetrace reads {SCHEMA_VERSION}; "
                          "rerun `sourcetrace bench` with this version")
    return check(obj, RESULT, source, ResultError)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_result_bytes(path: str | Path) -> tuple[bytes, object]:
    """A results file's bytes and its JSON. Refused: what is not a regular file (a FIFO would block),
    more than MAX_RESULT_BYTES (read no further than that), and NaN or Infinity (which Python's json
    would accept)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ResultError(f"{path}: not a regular file")
            data = fh.read(MAX_RESULT_BYTES + 1)
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_RESULT_BYTES:
        raise ResultError(f"{path}: more than {MAX_RESULT_BYTES // 2**20} MiB, the most a results file may hold "
                          "(a Table-1 result is ~0.1 MiB): not a sourcetrace results file?")
    try:
        return data, json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except ValueError as exc:
        raise ResultError(f"{path}: cannot read JSON ({exc})") from None


def load_result(path: str | Path) -> dict:
    return validate_result(read_result_bytes(path)[1], str(path))
