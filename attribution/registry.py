"""Attributors by name: what `--attributor` accepts (built-ins and `sourcetrace.attributors` plug-ins)."""

from __future__ import annotations

from sourcetrace.attribution.base import Attributor
from sourcetrace.core.plugins import ATTRIBUTORS


def build_attributor(name: str, **params) -> Attributor:
    return ATTRIBUTORS[name](**params)
