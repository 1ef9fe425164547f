"""Attributors by name: what `--attributor` accepts (built-ins and `sourcetrace.attributors` plug-ins)."""

from __future__ import annotations

from sourcetrace.plugins import ATTRIBUTORS

from .base import Attributor


def build_attributor(name: str, **params) -> Attributor:
    return ATTRIBUTORS[name](**params)
