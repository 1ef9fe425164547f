"""The registry of official checkpoints and the named training schedules, validated when loaded,
and `verify`: check a user's folder of downloaded checkpoints without unpickling anything."""

from __future__ import annotations

import tarfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sourcetrace.fileio import sha256_file

FORMATS = ("nemo", "torch")
TRUST = ("weights_only", "full-unpickling", "unknown")
_REQUIRED = ("id", "architecture", "kind", "file", "format", "source", "url", "sha256", "trust")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class OfficialCheckpoint:
    id: str
    architecture: str
    kind: str
    file: str
    format: str
    source: str
    url: str
    sha256: str
    trust: str
    companions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    name: str
    steps: tuple[int, ...]
    zero_init_seeds: tuple[int, ...]
    finetune_steps: int
    finetune_speaker: str
    finetune_clips: int
    batch_size: int


def _read(name: str, path: str | Path | None) -> tuple[dict, str]:
    if path is not None:
        return tomllib.loads(Path(path).read_text(encoding="utf-8")), str(path)
    return tomllib.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8")), f"checkpoints/{name}"


def load_registry(path: str | Path | None = None) -> list[OfficialCheckpoint]:
    raw, source = _read("registry.toml", path)
    out, ids = [], set()
    for n, entry in enumerate(raw.get("checkpoint", []), start=1):
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise RegistryError(f"{source}: checkpoint #{n}: missing {', '.join(missing)}")
        if entry["format"] not in FORMATS or entry["trust"] not in TRUST:
            raise RegistryError(f"{source}: {entry['id']}: format must be one of {FORMATS}, trust one of {TRUST}")
        if entry["id"] in ids:
            raise RegistryError(f"{source}: duplicate id {entry['id']!r}")
        ids.add(entry["id"])
        out.append(OfficialCheckpoint(**{**entry, "companions": tuple(entry.get("companions", ()))}))
    if not out:
        raise RegistryError(f"{source}: no [[checkpoint]] entries")
    return out


def load_schedule(name: str, path: str | Path | None = None) -> Schedule:
    raw, source = _read("schedules.toml", path)
    if name not in raw:
        raise RegistryError(f"{source}: no schedule {name!r}; schedules: {', '.join(sorted(raw))}")
    entry = raw[name]
    steps = tuple(int(s) for s in entry["steps"])
    if not steps or list(steps) != sorted(set(steps)) or steps[0] <= 0:
        raise RegistryError(f"{source}: [{name}] steps must be positive and strictly increasing")
    return Schedule(name, steps, tuple(int(s) for s in entry["zero_init_seeds"]), int(entry["finetune_steps"]),
                    str(entry["finetune_speaker"]), int(entry["finetune_clips"]), int(entry["batch_size"]))


def sniff_format(path: Path) -> str:
    """'nemo' (a tar with model_config.yaml and model_weights.ckpt), 'torch' (torch.save's zip
    format, or the legacy pickle format), or a description of what the file is instead."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            names = {Path(m.name).name for m in tar.getmembers()}
        if {"model_config.yaml", "model_weights.ckpt"} <= names:
            return "nemo"
        return "tar archive without model_config.yaml and model_weights.ckpt"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist()):
                return "torch"
        return "zip archive that is not a torch.save file"
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # legacy (pre-1.6) torch.save: a pickle stream
    return "not a checkpoint (neither a .nemo tar, a torch zip nor a pickle)"


@dataclass
class VerifyRow:
    entry: OfficialCheckpoint
    path: Path | None = None
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.path is None:
            return "missing"
        return "ok" if not self.problems else "bad"


def verify_folder(folder: str | Path, registry: list[OfficialCheckpoint] | None = None) -> list[VerifyRow]:
    """Find each registry file under `folder` (any depth), check its format, companions and hash."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegistryError(f"{folder}: no such folder")
    registry = registry or load_registry()
    rows = []
    for entry in registry:
        row = VerifyRow(entry)
        found = sorted(folder.rglob(entry.file))
        found = [p for p in found if p.is_file()]
        if len(found) > 1:
            row.problems.append(f"{len(found)} files named {entry.file}: {', '.join(map(str, found[:3]))}")
        if found:
            row.path = found[0]
            kind = sniff_format(row.path)
            if kind != entry.format:
                row.problems.append(f"expected {entry.format} format, found: {kind}")
            for companion in entry.companions:
                if not (row.path.parent / companion).is_file():
                    row.problems.append(f"missing companion {companion} beside it")
            row.sha256 = sha256_file(row.path)
            if entry.sha256 and row.sha256 != entry.sha256:
                row.problems.append(f"sha256 {row.sha256[:16]}... differs from the published {entry.sha256[:16]}...")
        rows.append(row)
    return rows
