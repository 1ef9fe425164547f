"""Results files: one JSON per (protocol, attributor, extractor, corpus), versioned and validated."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 1
PACKAGES = ("sourcetrace", "torch", "numpy", "scikit-learn", "transformers", "scipy")


class ResultError(ValueError):
    pass


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


# Required keys and their types; nested dicts are checked one level down where it matters.
_REQUIRED = {
    "schema_version": int, "protocol": dict, "corpus": dict, "features": dict, "attributor": dict,
    "seeds": list, "levels": dict, "provenance": dict,
}
_PROTOCOL_KEYS = {"name": str, "version": int, "sha256": str, "title": str}
_LEVEL_KEYS = {"mean": (int, float), "std": (int, float), "per_seed": list, "confusion": dict}


def validate_result(obj, source: str = "<result>") -> dict:
    """Check a results object against the schema; raise ResultError naming the file and the key."""
    if not isinstance(obj, dict):
        raise ResultError(f"{source}: not a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(f"{source}: schema_version {version!r}, this sourcetrace reads {SCHEMA_VERSION}; "
                          "rerun `sourcetrace bench` with this version")
    for key, kind in _REQUIRED.items():
        if not isinstance(obj.get(key), kind):
            raise ResultError(f"{source}: missing or mistyped {key!r} (want {kind.__name__})")
    for key, kind in _PROTOCOL_KEYS.items():
        if not isinstance(obj["protocol"].get(key), kind):
            raise ResultError(f"{source}: protocol.{key} missing or mistyped")
    if not isinstance(obj["corpus"].get("sha256"), str):
        raise ResultError(f"{source}: corpus.sha256 missing")
    for key in ("name", "id"):
        if not isinstance(obj["attributor"].get(key), str):
            raise ResultError(f"{source}: attributor.{key} missing")
    if not isinstance(obj["features"].get("extractor"), str):
        raise ResultError(f"{source}: features.extractor missing")
    for level, entry in obj["levels"].items():
        for key, kind in _LEVEL_KEYS.items():
            if not isinstance(entry.get(key), kind):
                raise ResultError(f"{source}: levels.{level}.{key} missing or mistyped")
    return obj


def load_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: cannot read JSON ({exc})") from None
    return validate_result(obj, str(path))
