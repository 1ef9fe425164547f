"""The registry of official checkpoints and the named training schedules, validated when loaded,
and `verify`: check a user's folder of downloaded checkpoints without unpickling anything (the
reading itself is `official.py`'s, shared with every loader)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from sourcetrace.checkpoints.formats import CONTAINERS
from sourcetrace.checkpoints.official import describe, inspect_file
from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import read_user_text, sha256_file
from sourcetrace.core.plugins import GENERATORS, VOCODERS

TRUST = ("weights_only", "full-unpickling", "unknown")
_REQUIRED = ("id", "architecture", "kind", "file", "format", "source", "url", "sha256", "trust")


class RegistryError(SourcetraceError, ValueError):
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
    aliases: tuple[str, ...] = ()   # other names the same file is saved under (Matcha's tooling: hifigan_T2_v1)
    vocoder_kind: str = ""          # a vocoder's kind where the format does not tell it (vocos, bigvgan, dle-hifigan)
    paper_url: str = ""             # the link the study's paper gives for this file, where it gives one
    paper_note: str = ""            # how that link resolves to this file, or where the two differ
    licence: str = "unknown"        # the publisher's terms, as far as we have read them
    citation: str = ""              # the paper to cite
    size: int | None = None         # bytes of the file at url, where known
    companion_urls: tuple[tuple[str, str], ...] = ()  # (companion, url) for companions not inside an archive
    archive: str = ""               # "zip": url is a zip holding file and companions (taken out by fetch)
    folder: str = ""                # the subfolder of official/ that fetch keeps a release folder in
    needs: tuple[str, ...] = ()     # other fetch artefacts a loader of this file needs (the NLTK data of g2p_en)

    @property
    def model(self) -> str:
        """What the file holds: the architecture, or the vocoder kind (official.model_name says it in words)."""
        if self.kind == "vocoder":
            return self.vocoder_kind or ("nemo-hifigan" if self.format == "nemo" else "hifigan")
        return self.architecture


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
        try:
            return tomllib.loads(read_user_text(path)), str(path)
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{path}: not valid TOML ({exc})") from None
    return tomllib.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8")), f"checkpoints/{name}"


def load_registry(path: str | Path | None = None) -> list[OfficialCheckpoint]:
    raw, source = _read("registry.toml", path)
    out, ids = [], set()
    for n, entry in enumerate(raw.get("checkpoint", []), start=1):
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise RegistryError(f"{source}: checkpoint #{n}: missing {', '.join(missing)}")
        if entry["format"] not in CONTAINERS or entry["trust"] not in TRUST:
            raise RegistryError(f"{source}: {entry['id']}: format must be one of {CONTAINERS}, trust one of {TRUST}")
        if entry["id"] in ids:
            raise RegistryError(f"{source}: duplicate id {entry['id']!r}")
        ids.add(entry["id"])
        unknown = sorted(set(entry) - {f.name for f in fields(OfficialCheckpoint)})
        if unknown:
            raise RegistryError(f"{source}: {entry['id']}: unknown key(s) {', '.join(unknown)}")
        companion_urls = entry.get("companion_urls", {})
        if (set(companion_urls) - set(entry.get("companions", ())) or entry.get("archive", "zip") != "zip"
                or not isinstance(entry.get("size", 0), int) or entry.get("size", 0) < 0):
            raise RegistryError(f"{source}: {entry['id']}: companion_urls must name companions, archive must be "
                                "\"zip\", size a number of bytes")
        checkpoint = OfficialCheckpoint(**{**entry, "companions": tuple(entry.get("companions", ())),
                                           "aliases": tuple(entry.get("aliases", ())),
                                           "companion_urls": tuple(companion_urls.items()),
                                           "needs": tuple(entry.get("needs", ()))})
        # the one list of architecture names (plug-ins too); a vocoder no architecture owns names none
        if checkpoint.architecture not in GENERATORS and not (checkpoint.kind == "vocoder" and not checkpoint.architecture):
            raise RegistryError(f"{source}: {entry['id']}: architecture must be one of {GENERATORS.describe()}")
        if checkpoint.vocoder_kind and checkpoint.vocoder_kind not in VOCODERS:
            raise RegistryError(f"{source}: {entry['id']}: vocoder_kind must be one of {VOCODERS.describe()}")
        out.append(checkpoint)
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


def official_path(path: str | Path) -> Path:
    """`path`, or the file beside it saved under another name of the same registry entry
    (Matcha's vocoder is `generator_v1` in the release and `hifigan_T2_v1` from its tooling)."""
    path = Path(path)
    if path.exists():
        return path
    for entry in load_registry():
        names = (entry.file, *entry.aliases)
        if path.name in names:
            for other in names:
                if (path.parent / other).is_file():
                    return path.parent / other
    return path


@dataclass
class VerifyRow:
    entry: OfficialCheckpoint
    path: Path | None = None
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)
    note: str | None = None   # a sound file that loads only with --trust says so here

    @property
    def status(self) -> str:
        if self.path is None:
            return "missing"
        return "ok" if not self.problems else "bad"


def verify_folder(folder: str | Path, registry: list[OfficialCheckpoint] | None = None) -> list[VerifyRow]:
    """Find each registry file under `folder` (any depth, by its name or an alias) and prove it is
    complete, of the registry's format, holds the expected model, calls no global its official
    format does not need, has its companions and (where published) its sha256. Nothing is
    unpickled; every failure is a problem line of its row, never an exception."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegistryError(f"{folder}: no such folder")
    registry = registry or load_registry()
    rows = []
    for entry in registry:
        row = VerifyRow(entry)
        try:
            _verify_entry(folder, entry, row)
        except Exception as exc:  # noqa: BLE001 - whatever a file does to the reader: a problem line, not a crash
            row.problems.append(f"cannot be checked ({type(exc).__name__}: {exc})")
        rows.append(row)
    return rows


def _verify_entry(folder: Path, entry: OfficialCheckpoint, row: VerifyRow) -> None:
    found = sorted(p for name in (entry.file, *entry.aliases) for p in folder.rglob(name) if p.is_file())
    if len(found) > 1:
        row.problems.append(f"{len(found)} files named {' or '.join((entry.file, *entry.aliases))}: "
                            f"{', '.join(map(str, found[:3]))}")
    if not found:
        return
    row.path = found[0]
    report = inspect_file(row.path, deep=True)
    if report.format is not None and report.format != entry.format:
        row.problems.append(f"expected {entry.format} format, found {describe(report)}")
    else:
        refusal = report.refusal(entry.model)
        if refusal:
            row.problems.append(refusal)
        elif report.holds is None:
            row.problems.append(f"{describe(report)}: its keys are not those of the official file")
    for companion in entry.companions:
        if not (row.path.parent / companion).is_file():
            row.problems.append(f"missing companion {companion} beside it")
    row.sha256 = sha256_file(row.path)
    if entry.sha256 and row.sha256 != entry.sha256:
        row.problems.append(f"sha256 {row.sha256[:16]}... differs from the published {entry.sha256[:16]}...")
    if not row.problems:
        row.note = report.trust_note(entry.model)
