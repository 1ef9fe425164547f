"""Attributors by name: what `--attributor` accepts."""

from __future__ import annotations

from .base import Attributor
from .knn import KNNAttributor
from .probe import LinearProbeAttributor

ATTRIBUTORS: dict[str, type[Attributor]] = {
    KNNAttributor.name: KNNAttributor,
    LinearProbeAttributor.name: LinearProbeAttributor,
}


def build_attributor(name: str, **params) -> Attributor:
    if name not in ATTRIBUTORS:
        raise ValueError(f"unknown attributor {name!r}; choose one of {', '.join(sorted(ATTRIBUTORS))}")
    return ATTRIBUTORS[name](**params)
