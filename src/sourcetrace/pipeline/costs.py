"""The per-unit costs of a study (`costs.toml`): seconds per training step, synthesis real-time
factors, feature extraction rates, bytes per checkpoint, clip and feature vector, each measured or
estimated with its basis. `run --plan` multiplies them by a recipe's units; recipes/study-compute.md
shows them (tools/study_compute.py)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from sourcetrace.core.errors import UsageError

STATUSES = ("measured", "estimate", "exact")


@dataclass(frozen=True)
class Cost:
    """One number of the table and where it comes from; `key` is its dotted place, "train.h100.default.vits"."""

    key: str
    value: float
    status: str
    basis: str
    batch: int | None = None  # training steps: the batch the step time is for


class CostTable:
    """costs.toml, read once; a lookup of a row the table lacks returns None (no estimate), never a guess."""

    def __init__(self, tables: dict):
        self.tables = tables
        self.devices: dict[str, str] = tables["devices"]
        self.classes: dict[str, str] = tables["classes"]

    @classmethod
    def shipped(cls) -> CostTable:
        return cls(tomllib.loads(resources.files(__package__).joinpath("costs.toml").read_text(encoding="utf-8")))

    def cost(self, *path: str) -> Cost | None:
        entry = self.tables
        for part in path:
            if not isinstance(entry, dict) or part not in entry:
                return None
            entry = entry[part]
        key = ".".join(path)
        if entry.get("status") not in STATUSES:
            raise UsageError(f"costs.toml {key}: status must be one of {', '.join(STATUSES)}, got {entry.get('status')!r}")
        return Cost(key, entry["value"], entry["status"], entry["basis"], entry.get("batch"))

    def device_class(self, device: str) -> str | None:
        """The class of rows for a recipe's [study] device ("cuda:1" is "cuda"); None when the table has none."""
        return self.devices.get(device.partition(":")[0])

    def rows(self) -> list[Cost]:
        """Every number of the table, in file order (the document's per-unit table)."""
        out: list[Cost] = []

        def walk(entry: dict, path: tuple[str, ...]) -> None:
            if "value" in entry:
                found = self.cost(*path)
                assert found is not None
                out.append(found)
                return
            for name, sub in entry.items():
                if isinstance(sub, dict):
                    walk(sub, (*path, name))

        for section in ("audio", "train", "checkpoint", "synth", "features"):
            walk(self.tables[section], (section,))
        return out
