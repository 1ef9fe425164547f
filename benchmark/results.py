"""Results files: one JSON per (protocol, attributor, extractor, corpus), versioned and validated."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from sourcetrace.errors import SourcetraceError
from sourcetrace.schema import RESULT, check

SCHEMA_VERSION = 1
PACKAGES = ("sourcetrace", "torch", "numpy", "scikit-learn", "transformers", "scipy")


class ResultError(SourcetraceError, ValueError):
    pass


def file_slug(text: str) -> str:
    """A file-name-safe form of a name users write."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def result_file_name(protocol: str, attributor_id: str, extractor: str) -> str:
    """Every part slugged: names come from files users write (protocols) or edit (results)."""
    return f"{file_slug(protocol)}__{file_slug(attributor_id)}__{file_slug(extractor)}.json"


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seed_summary(per_seed: list[dict]) -> tuple[float, float]:
    """Mean and population std (ddof=0) over seeds of the per-seed macro F1; the entries of one
    seed (its vocoder variants) are averaged first, so std measures split-to-split spread."""
    import numpy as np

    by_seed: dict[int, list[float]] = {}
    for entry in per_seed:
        by_seed.setdefault(entry["seed"], []).append(entry["macro_f1"])
    seed_means = np.array([np.mean(v) for _, v in sorted(by_seed.items())])
    return float(seed_means.mean()), float(seed_means.std(ddof=0))


def validate_result(obj, source: str = "<result>") -> dict:
    """Check a results object against its schema (sourcetrace.schema.RESULT); raise ResultError
    naming the file and the key."""
    if not isinstance(obj, dict):
        raise ResultError(f"{source}: not a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(f"{source}: schema_version {version!r}, this sourcetrace reads {SCHEMA_VERSION}; "
                          "rerun `sourcetrace bench` with this version")
    return check(obj, RESULT, source, ResultError)


def load_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: cannot read JSON ({exc})") from None
    return validate_result(obj, str(path))
