"""Protocols: which checkpoints go to support and query, how prompts split, which vocoders.

A protocol is a TOML file (see `protocols/`), validated when loaded. Checkpoint roles come from
the checkpoint names of the corpus contract (sourcetrace.core.naming):

    <arch>/pretrained           pretrained      the official pretrained model
    <arch>/step-<N>             scheduled       a from-scratch checkpoint at step N (ordered by N)
    <arch>/zero-init-s<seed>    zero-init       an untrained, seeded model
    <arch>/ft-<name>            finetuned       a fine-tune (e.g. ft-9136)
    anything else               other

Vocoder conditions read two manifest columns (sourcetrace.corpus.columns says what each means):
`vocoder` and `vocoder_swapped` (empty counts as not swapped). Architectures with swapped clips
are the mel-spectrogram ones.

A protocol scores one or more label levels (sourcetrace.core.schema.LEVELS); LEVEL_COLUMNS names the
manifest column each label comes from. Beyond the study's two:

    implementation      the codebase: the `implementation` column without its version
                        ("coqui-tts 0.28.0" -> "coqui-tts"), as `sourcetrace synth` records it
    vocoder-family      the `vocoder_family` column (hifigan, vocos, bigvgan, ...)
    finetune-speaker    the `speaker` column; for a fine-tune without one, the speaker its
                        `ft-<speaker>` name gives (the two must agree where both exist)

A public set's own splits (`prompts = "shipped"`, protocols/<set>-*.toml) select each side by
manifest values instead of roles and prompts: `support`, `calibration` and `query` tables with
`where = { split = ["train"], key = ["spoof"] }` (a clip matches when each named column has one
of the values; a cell of several values joined by `+` matches any of them). `calibration` is the
split an open-set threshold is fixed on. `unseen = "unknown"`: a calibration or query clip whose
label at a level is absent from the support is labelled `unknown` there (`Split.truth`), as the
sets define unseen systems. `disjoint = ["speaker"]`: calibration and query clips sharing a value
of these columns with the support are dropped (counted in the split), the leak-free variants.
A protocol-level `where` narrows every side of any protocol (say, WaveFake's LJSpeech vocoders).

A public set's protocol names its set (`dataset = "mlaad"`, a `corpus import --format` name: the
leaderboard's published reference rows are looked up by it). With a calibration side and
`unseen = "unknown"` it is an open-set protocol (`Protocol.open_set`): bench scores it closed set
on the query clips of known systems and open set (benchmark.openset) with the threshold `threshold`
fixes on calibration ("eer", the default, as TADA and the MLAAD baseline; or "fpr=R", for a set whose
calibration split holds known systems only) and the out-of-domain scores `ood_scores` names
(default: every score of attribution.ood_scores).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from sourcetrace.attribution.unknown import UNKNOWN, check_threshold_rule
from sourcetrace.benchmark.splits import split_prompts
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import read_user_text
from sourcetrace.core.naming import checkpoint_role, finetune_speaker, step_of
from sourcetrace.core.schema import LEVELS, PROTOCOL, STUDY_LEVELS, check
from sourcetrace.corpus.columns import ClipRecord
from sourcetrace.corpus.sets import FORMATS


class ProtocolError(SourcetraceError, ValueError):
    pass


class UnsatisfiableProtocol(SourcetraceError, ValueError):
    """The corpus lacks what the protocol needs; `missing` lists every gap."""

    def __init__(self, protocol: str, missing: list[str], corpus: str = ""):
        self.missing = missing
        shown = "\n  ".join(missing[:40]) + (f"\n  ... and {len(missing) - 40} more" if len(missing) > 40 else "")
        where = f"corpus {corpus!r}" if corpus else "this corpus"
        super().__init__(f"protocol {protocol!r} cannot run on {where}; missing:\n  {shown}")


# The manifest column each level's label comes from (ClipTable.labels derives it).
LEVEL_COLUMNS = {"checkpoint": "checkpoint", "architecture": "architecture", "implementation": "implementation",
                 "vocoder-family": "vocoder_family", "finetune-speaker": "speaker"}
# What a corpus must hold for a question beyond the study's levels to have two answers or more.
LEVEL_NEEDS = {
    "implementation": "two implementations (codebases) of one architecture, e.g. `vits` (coqui-tts) and "
                      "`vits-espnet` (espnet), with the `implementation` column filled",
    "vocoder-family": "the same checkpoints vocoded by two vocoder families or more (e.g. hifigan and vocos), "
                      "with the `vocoder_family` column filled",
    "finetune-speaker": "fine-tunes on two speakers or more (checkpoints `<arch>/ft-<speaker>`)",
}
assert set(LEVEL_COLUMNS) == set(LEVELS) and set(LEVEL_NEEDS) == set(LEVELS) - set(STUDY_LEVELS)


def codebase(implementation: str) -> str:
    """The implementation without its version: generators record `<package> <version>`."""
    return implementation.split()[0] if implementation.strip() else ""


@dataclass(frozen=True)
class Selection:
    roles: tuple[str, ...] = ()
    scheduled_positions: tuple[int, ...] = ()  # 1-based positions in each architecture's schedule
    random_scheduled: int = 0                  # this many scheduled checkpoints per architecture, drawn per seed
    exclude_support: bool = False
    holdout: bool = False
    exclude_holdout: bool = False
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (manifest column, values a clip may have)


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    version: int
    prompts: str
    vocoder: str
    levels: tuple[str, ...]
    support: Selection
    query: Selection
    disjoint_checkpoints: bool = False
    balance: tuple[str, ...] = STUDY_LEVELS  # levels at which support and query classes must be equal in size
    architectures: tuple[str, ...] = ()      # only these architectures' clips (empty: every architecture)
    architectures_with_roles: bool = False   # only architectures with checkpoints of every selected role
    balance_query: bool = True         # False: only support classes are balance-checked
    table1_row: int | None = None
    calibration: Selection | None = None     # the split open-set thresholds are fixed on (shipped splits)
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # every side: only clips with these column values
    disjoint: tuple[str, ...] = ()           # columns whose values calibration and query may not share with support
    unseen: str = ""                         # "unknown": labels absent from support are `unknown` off support
    dataset: str = ""                        # the public set's `corpus import --format` name
    threshold: str = "eer"                   # the open-set threshold rule (unknown.threshold_by_rule)
    ood_scores: tuple[str, ...] = ()         # open-set out-of-domain score specs; empty: openset's default
    sha256: str = ""
    source: str = ""
    definition: dict = field(default_factory=dict, compare=False)

    @property
    def open_set(self) -> bool:
        """A calibration side and unseen systems labelled unknown: scored closed set on known systems, and open set."""
        return self.calibration is not None and self.unseen == UNKNOWN

    @property
    def uses_holdout(self) -> bool:
        return self.query.holdout or self.support.exclude_holdout or self.support.holdout or self.query.exclude_holdout


def _selection(raw: dict, where: str) -> Selection:
    """A support or query table, already type-checked against sourcetrace.core.schema.PROTOCOL."""
    sel = Selection(roles=tuple(raw.get("roles", ())), scheduled_positions=tuple(raw.get("scheduled_positions", ())),
                    random_scheduled=raw.get("random_scheduled", 0), exclude_support=raw.get("exclude_support", False),
                    holdout=raw.get("holdout", False), exclude_holdout=raw.get("exclude_holdout", False),
                    where=_where(raw.get("where", {})))
    if not (sel.roles or sel.scheduled_positions or sel.random_scheduled or sel.holdout or sel.where):
        raise ProtocolError(f"{where}: selects nothing (give roles, scheduled_positions, random_scheduled, holdout "
                            "or where)")
    return sel


def _where(raw: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((column, tuple(values)) for column, values in raw.items()))


def _check_shipped(raw: dict, source: str) -> None:
    """A shipped-split protocol selects every side by `where` only; the others have no calibration.
    Open-set settings need a calibration side and unseen systems; `dataset` names a set sourcetrace reads."""
    if "threshold" in raw:
        try:
            check_threshold_rule(raw["threshold"])  # the one rule of what a threshold may say
        except UsageError as exc:
            raise ProtocolError(f"{source}: {exc}") from None
    if ("threshold" in raw or "ood_scores" in raw) and not ("calibration" in raw and raw.get("unseen") == UNKNOWN):
        raise ProtocolError(f"{source}: threshold and ood_scores are open-set settings: they need a calibration "
                            f"side and unseen = \"{UNKNOWN}\"")
    if "dataset" in raw and raw["dataset"] not in FORMATS:
        raise ProtocolError(f"{source}: dataset {raw['dataset']!r} is not a set sourcetrace reads; say one of "
                            f"{', '.join(FORMATS)} (the corpus import --format names)")
    sides = [side for side in ("support", "calibration", "query") if side in raw]
    if raw["prompts"] != "shipped":
        if "calibration" in raw or "disjoint" in raw or any("where" in raw[side] for side in sides):
            raise ProtocolError(f"{source}: calibration, disjoint and a side's where need prompts = \"shipped\" "
                                "(the set's own splits)")
        return
    for side in sides:
        others = sorted(set(raw[side]) - {"where"})
        if others or "where" not in raw[side]:
            raise ProtocolError(f"{source}: {side}: with prompts = \"shipped\" a side is selected by where = "
                                f"{{column = [values]}} only" + (f", not {', '.join(others)}" if others else ""))
    if raw["vocoder"] != "default" or raw.get("checkpoints"):
        raise ProtocolError(f"{source}: with prompts = \"shipped\" use vocoder = \"default\" and no checkpoints "
                            "mode: the set's lists say which clips go where")


def parse_protocol(text: str, name: str, source: str = "<string>") -> Protocol:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML: {exc}") from None
    check(raw, PROTOCOL, source, ProtocolError)
    _check_shipped(raw, source)
    levels = tuple(raw["levels"])
    disjoint = raw.get("checkpoints") == "disjoint"
    if disjoint and "checkpoint" in levels:
        raise ProtocolError(f"{source}: with disjoint checkpoints the checkpoint level cannot apply "
                            "(only the architecture level and the other label levels)")
    return Protocol(
        name=name, title=raw["title"], version=raw["version"], prompts=raw["prompts"],
        vocoder=raw["vocoder"], levels=levels, support=_selection(raw["support"], f"{source}: support"),
        query=_selection(raw["query"], f"{source}: query"), disjoint_checkpoints=disjoint,
        balance=tuple(raw.get("balance", STUDY_LEVELS)), balance_query=raw.get("balance_query", True),
        architectures=tuple(raw.get("architectures", ())), architectures_with_roles=raw.get("architectures_with_roles", False),
        table1_row=raw.get("table1_row"), sha256=hashlib.sha256(text.encode()).hexdigest(), source=source,
        calibration=_selection(raw["calibration"], f"{source}: calibration") if "calibration" in raw else None,
        where=_where(raw.get("where", {})), disjoint=tuple(raw.get("disjoint", ())), unseen=raw.get("unseen", ""),
        dataset=raw.get("dataset", ""), threshold=raw.get("threshold", "eer"), ood_scores=tuple(raw.get("ood_scores", ())),
        definition=raw,
    )


def _builtin_dir():
    return resources.files(__package__).joinpath("protocols")


def builtin_protocols() -> list[str]:
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_protocol(name_or_path: str) -> Protocol:
    """A built-in protocol by name, or a protocol TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return parse_protocol(read_user_text(path), path.stem, str(path))
    if name_or_path not in builtin_protocols():
        raise ProtocolError(f"unknown protocol {name_or_path!r}; built-in: {', '.join(builtin_protocols())}, "
                            "or give the path of a .toml file")
    entry = _builtin_dir().joinpath(f"{name_or_path}.toml")
    return parse_protocol(entry.read_text(encoding="utf-8"), name_or_path, f"protocols/{name_or_path}.toml")


def load_suite(name: str) -> list[Protocol]:
    """The protocols of a named suite (benchmark/suites.toml); an entry naming another suite stands for its protocols."""
    suites = tomllib.loads(resources.files(__package__).joinpath("suites.toml").read_text(encoding="utf-8"))
    if name not in suites:
        raise ProtocolError(f"unknown suite {name!r}; suites: {', '.join(sorted(suites))}")
    names = [p for entry in suites[name] for p in suites.get(entry, [entry])]
    return [load_protocol(p) for p in names]


def load_protocols(suite: str | None, names=()) -> list[Protocol]:
    """A named suite's protocols, or those `names` lists (built-in names or .toml files): one of the two."""
    if bool(suite) == bool(names):
        raise UsageError("give either a suite (--suite NAME) or protocols (--protocol NAME|FILE), not both or neither")
    return load_suite(suite) if suite else [load_protocol(p) for p in names]


# ---- the clips a protocol can see ------------------------------------------------------------


@dataclass
class ClipTable:
    """The manifest columns the benchmark needs, as arrays aligned with the feature matrix.

    Checkpoints and prompts are also held as integer codes, so selecting the rows of a split is
    array indexing rather than string comparison (the study's corpus has ~70,000 clips).
    """

    clip_id: np.ndarray
    architecture: np.ndarray
    checkpoint: np.ndarray
    prompt_id: np.ndarray
    vocoder: np.ndarray
    swapped: np.ndarray  # bool
    label_columns: dict[str, np.ndarray] = field(default_factory=dict)  # the other LEVEL_COLUMNS, "" where absent
    source: str = ""  # the corpus, named in messages
    records: list[ClipRecord] | None = None  # the rows, for any other column a protocol's `where` names

    def __post_init__(self):
        self.checkpoints, self.checkpoint_code = np.unique(self.checkpoint.astype(str), return_inverse=True)
        self.prompts, self.prompt_code = np.unique(self.prompt_id.astype(str), return_inverse=True)
        _, first = np.unique(self.checkpoint_code, return_index=True)
        self.checkpoint_architecture = self.architecture[first].astype(str)  # aligned with self.checkpoints
        self._labels: dict[str, np.ndarray] = {}

    @classmethod
    def from_records(cls, rows: list[ClipRecord], source: str = "") -> ClipTable:
        col = lambda name: np.array([r.cell(name) for r in rows], dtype=object)  # noqa: E731
        swapped = np.array([bool(r.vocoder_swapped) for r in rows], dtype=bool)
        extra = {LEVEL_COLUMNS[lv]: col(LEVEL_COLUMNS[lv]) for lv in LEVELS if lv not in STUDY_LEVELS}
        return cls(col("clip_id"), col("architecture"), col("checkpoint"), col("prompt_id"), col("vocoder"), swapped,
                   extra, source, list(rows))

    def __len__(self) -> int:
        return len(self.clip_id)

    def column(self, name: str) -> np.ndarray:
        """Every clip's value of a manifest column ("" where absent), read once from the rows."""
        if name not in self.label_columns:
            if name in ("clip_id", "architecture", "checkpoint", "prompt_id", "vocoder"):
                return getattr(self, name)
            if self.records is None:
                return np.full(len(self), "", dtype=object)
            self.label_columns[name] = np.array([r.cell(name) for r in self.records], dtype=object)
        return self.label_columns[name]

    def matching(self, where: tuple[tuple[str, tuple[str, ...]], ...]) -> np.ndarray:
        """Clips whose every named column holds one of its values (a `+`-joined cell: any of its parts)."""
        keep = np.ones(len(self), dtype=bool)
        for name, values in where:
            cells = self.column(name).astype(str)
            distinct, code = np.unique(cells, return_inverse=True)
            wanted = set(values)
            keep &= np.array([bool(wanted & set(c.split("+"))) for c in distinct], dtype=bool)[code]
        return keep

    def labels(self, level: str) -> np.ndarray:
        """The class of every clip at `level` (LEVEL_COLUMNS), "" where the manifest does not say.
        Computed once per level: every split, side and attributor of a run reads it."""
        if level not in self._labels:
            if level not in LEVEL_COLUMNS:
                raise ProtocolError(f"unknown level {level!r}; levels: {', '.join(LEVELS)}")
            said = (getattr(self, level) if level in STUDY_LEVELS else self.column(LEVEL_COLUMNS[level])).astype(str)
            if level == "implementation":  # a package and version, labelled by its codebase
                names, code = np.unique(said, return_inverse=True)
                said = np.array([codebase(n) for n in names], dtype=str)[code]
            elif level == "finetune-speaker":  # the checkpoint's name says it where the column does not
                by_name = np.array([finetune_speaker(c) or "" for c in self.checkpoints], dtype=str)[self.checkpoint_code]
                said = np.where(said != "", said, by_name)
            self._labels[level] = said
        return self._labels[level]


@dataclass
class Split:
    """Row indices of one run (protocol x seed x vocoder variant) and what defined them."""

    seed: int
    variant: str | None
    support: np.ndarray
    validation: np.ndarray
    query: np.ndarray
    support_checkpoints: list[str]
    query_checkpoints: list[str]
    calibration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mark_unseen: bool = False  # the protocol's unseen = "unknown"
    leaks_dropped: dict[str, int] = field(default_factory=dict)  # column -> calibration/query clips dropped

    def truth(self, table: ClipTable, level: str, side: str = "query") -> np.ndarray:
        """The true labels of a side at `level`; with `mark_unseen`, `unknown` for a class the support lacks."""
        labels = table.labels(level)[getattr(self, side)]
        if not self.mark_unseen or side == "support":
            return labels
        known = np.unique(table.labels(level)[self.support])
        return np.where(np.isin(labels, known), labels, UNKNOWN)


def _checkpoints_by_arch(table: ClipTable, rows: np.ndarray) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for code in np.unique(table.checkpoint_code[rows]):
        out.setdefault(str(table.checkpoint_architecture[code]), []).append(str(table.checkpoints[code]))
    return {a: sorted(c) for a, c in sorted(out.items())}


def _select(sel: Selection, by_arch: dict[str, list[str]], seed: int, holdout: set[str],
            support: set[str], missing: list[str], side: str) -> set[str]:
    chosen: set[str] = set()
    for arch, ckpts in by_arch.items():
        roles = {c: checkpoint_role(c) for c in ckpts}
        schedule = sorted((c for c in ckpts if roles[c] == "scheduled"), key=step_of)
        for role in sel.roles:
            found = ckpts if role == "all" else [c for c in ckpts if roles[c] == role]
            if not found:
                missing.append(f"{side}: architecture {arch!r} has no {role} checkpoint")
            chosen.update(found)
        for pos in sel.scheduled_positions:
            if pos > len(schedule):
                missing.append(f"{side}: architecture {arch!r} has {len(schedule)} scheduled checkpoints, "
                               f"position {pos} needed")
            else:
                chosen.add(schedule[pos - 1])
        if sel.random_scheduled:
            if len(schedule) < sel.random_scheduled:
                missing.append(f"{side}: architecture {arch!r} has {len(schedule)} scheduled checkpoints, "
                               f"{sel.random_scheduled} random ones needed")
            else:
                rng = np.random.default_rng([seed, int(hashlib.sha256(arch.encode()).hexdigest()[:8], 16)])
                chosen.update(schedule[i] for i in rng.choice(len(schedule), sel.random_scheduled, replace=False))
    if sel.holdout:
        chosen.update(c for ckpts in by_arch.values() for c in ckpts if c in holdout)
    if sel.exclude_holdout:
        chosen -= holdout
    if sel.exclude_support:
        chosen -= support
    return chosen


def _prompt_parts(protocol: Protocol, prompts: list[str], checkpoints: set[str], seed: int) -> dict[str, dict]:
    if protocol.prompts == "disjoint":
        shared = split_prompts(prompts, seed)
        return {c: shared for c in checkpoints}
    parts = {}
    for c in checkpoints:  # each class draws its own partition, seeded by (seed, checkpoint)
        sub_seed = int(hashlib.sha256(f"{seed}:{c}".encode()).hexdigest()[:8], 16)
        parts[c] = split_prompts(prompts, sub_seed)
    return parts


def _vocoder_pools(protocol: Protocol, table: ClipTable, usable: np.ndarray) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(variant, support pool mask, query pool mask) per vocoder variant of the protocol."""
    default = usable & ~table.swapped
    if protocol.vocoder == "default":
        return [(None, default, default)]
    mel_archs = set(table.architecture[usable & table.swapped])
    if not mel_archs:
        raise UnsatisfiableProtocol(protocol.name, ["clips with swapped vocoders (manifest column vocoder_swapped = 1)"],
                                    table.source)
    is_mel = np.isin(table.architecture, list(mel_archs))
    if protocol.vocoder == "all":  # every clip of the mel architectures, whatever vocoded it
        return [(None, usable & is_mel, usable & is_mel)]
    if protocol.vocoder == "mixed":
        query = (usable & table.swapped) | (default & ~is_mel)
        return [(None, default, query)]
    variants = []
    for vocoder in sorted(set(table.vocoder[usable & table.swapped])):
        pool = (usable & is_mel & (table.vocoder == vocoder)) | (default & ~is_mel)
        variants.append((vocoder, pool, pool))
    return variants


def _side_rows(table: ClipTable, pool: np.ndarray, ckpts: set[str], wanted: dict[str, list[str]], side: str,
               variant: str | None, missing: list[str]) -> np.ndarray:
    """Rows of `pool` whose (checkpoint, prompt) pair is wanted; records every wanted pair absent."""
    ckpt_index = {c: i for i, c in enumerate(table.checkpoints)}
    prompt_index = {p: i for i, p in enumerate(table.prompts)}
    allowed = np.zeros((len(table.checkpoints), len(table.prompts)), dtype=bool)
    for ckpt in ckpts:
        allowed[ckpt_index[ckpt], [prompt_index[p] for p in wanted[ckpt]]] = True
    rows = np.flatnonzero(pool & allowed[table.checkpoint_code, table.prompt_code])
    present = np.zeros_like(allowed)
    present[table.checkpoint_code[rows], table.prompt_code[rows]] = True
    for ckpt in sorted(ckpts):
        i = ckpt_index[ckpt]
        lacking = [table.prompts[j] for j in np.flatnonzero(allowed[i] & ~present[i])]
        if lacking:
            missing.append(f"{side}: checkpoint {ckpt!r}{f' with vocoder {variant}' if variant else ''} "
                           f"lacks {len(lacking)} prompt(s), e.g. {lacking[:3]}")
    return rows


def _rows_each_vocoder(table: ClipTable, pool: np.ndarray, ckpts: set[str], wanted: dict[str, list[str]], side: str,
                       missing: list[str]) -> np.ndarray:
    """`_side_rows` with every vocoder of the pool: each checkpoint must have each wanted prompt with each of them."""
    vocoders = sorted(set(table.vocoder[pool]))
    return np.sort(np.concatenate([_side_rows(table, pool & (table.vocoder == v), ckpts, wanted, side, v, missing)
                                   for v in vocoders])) if vocoders else np.zeros(0, dtype=np.int64)


def _architectures_with_roles(protocol: Protocol, table: ClipTable, usable: np.ndarray) -> np.ndarray:
    """The clips of the architectures that have checkpoints of every role the protocol selects
    (a fine-tune question leaves out an inference-only generator that has no fine-tunes)."""
    wanted = {r for sel in (protocol.support, protocol.query) for r in sel.roles if r != "all"}
    wanted |= {"scheduled" for sel in (protocol.support, protocol.query) if sel.scheduled_positions or sel.random_scheduled}
    roles: dict[str, set[str]] = {}
    for arch, ckpt in set(zip(table.architecture[usable], table.checkpoint[usable])):
        roles.setdefault(arch, set()).add(checkpoint_role(ckpt))
    keep = sorted(a for a, have in roles.items() if wanted <= have)
    if not keep:
        raise UnsatisfiableProtocol(protocol.name, [f"no architecture has checkpoints of every role {sorted(wanted)}"],
                                    table.source)
    return np.isin(table.architecture, keep)


def build_splits(protocol: Protocol, table: ClipTable, seeds: list[int], usable: np.ndarray | None = None,
                 holdout: list[str] | None = None) -> list[Split]:
    """Every (seed, vocoder variant) split of the protocol, with all invariants checked.

    Raises UnsatisfiableProtocol with the full list of what the corpus lacks: roles, scheduled
    positions, or (checkpoint, prompt) clips, instead of running a silently smaller experiment.
    """
    usable = np.ones(len(table), dtype=bool) if usable is None else usable
    scope = table.matching(protocol.where)  # every clip unless the protocol narrows them
    usable = usable & scope
    if protocol.prompts == "shipped":  # the set's own lists, the same for every seed: one split, the first seed's
        return [_shipped_split(protocol, table, seeds[0], usable)]
    holdout_set = set(holdout or [])
    if protocol.uses_holdout and not holdout_set:
        raise ProtocolError(f"protocol {protocol.name!r} needs the checkpoints to hold out (--holdout NAME[,NAME...])")
    unknown = holdout_set - set(table.checkpoint)
    if unknown:
        raise UnsatisfiableProtocol(protocol.name, [f"hold-out checkpoint {c!r} is not in the corpus" for c in sorted(unknown)],
                                    table.source)
    if protocol.architectures:
        absent = sorted(set(protocol.architectures) - set(table.architecture))
        if absent:
            raise UnsatisfiableProtocol(protocol.name, [
                f"architecture {a!r} is not in the corpus (the protocol compares {list(protocol.architectures)}; "
                f"the corpus has {sorted(set(table.architecture))})" for a in absent], table.source)
        usable = usable & np.isin(table.architecture, list(protocol.architectures))
    if protocol.architectures_with_roles:
        usable = usable & _architectures_with_roles(protocol, table, usable)
    prompts = sorted(set(table.prompt_id[scope])) if protocol.where else list(table.prompts)
    splits, missing = [], []
    for seed in seeds:
        for variant, support_pool, query_pool in _vocoder_pools(protocol, table, usable):
            support_ckpts = _select(protocol.support, _checkpoints_by_arch(table, np.flatnonzero(support_pool)),
                                    seed, holdout_set, set(), missing, "support")
            query_ckpts = _select(protocol.query, _checkpoints_by_arch(table, np.flatnonzero(query_pool)),
                                  seed, holdout_set, support_ckpts, missing, "query")
            if not support_ckpts or not query_ckpts:
                missing.append(f"{'support' if not support_ckpts else 'query'}: no checkpoint selected")
            if missing:
                raise UnsatisfiableProtocol(protocol.name, sorted(set(missing)), table.source)
            parts = _prompt_parts(protocol, prompts, support_ckpts | query_ckpts, seed)
            sides = {}
            for side, pool, ckpts, part in (("support", support_pool, support_ckpts, "support"),
                                            ("validation", support_pool, support_ckpts, "validation"),
                                            ("query", query_pool, query_ckpts, "query")):
                wanted = {c: parts[c][part] for c in ckpts}
                sides[side] = (_rows_each_vocoder(table, pool, ckpts, wanted, side, missing) if protocol.vocoder == "all"
                               else _side_rows(table, pool, ckpts, wanted, side, variant, missing))
            if missing:
                raise UnsatisfiableProtocol(protocol.name, sorted(set(missing)), table.source)
            split = Split(seed, variant, sides["support"], sides["validation"], sides["query"],
                          sorted(support_ckpts), sorted(query_ckpts))
            check_labels(protocol, table, split)
            check_invariants(protocol, table, split)
            splits.append(split)
    return splits


def _shipped_split(protocol: Protocol, table: ClipTable, seed: int, usable: np.ndarray) -> Split:
    """The set's own lists as the split of `seed` (they do not depend on it): support, calibration, query by
    `where`; calibration and query clips that leak a `disjoint` column's value from support dropped."""
    sides = {side: np.flatnonzero(usable & table.matching(sel.where))
             for side, sel in (("support", protocol.support), ("calibration", protocol.calibration),
                               ("query", protocol.query)) if sel is not None}
    sides.setdefault("calibration", np.zeros(0, dtype=np.int64))
    empty = [side for side in ("support", "query") if not sides[side].size]
    if empty:
        wanted = {"support": protocol.support.where, "query": protocol.query.where}
        raise UnsatisfiableProtocol(protocol.name, [f"{side}: no clip has {dict(wanted[side])}" for side in empty],
                                    table.source)
    dropped = {}
    for column in protocol.disjoint:
        values = table.column(column).astype(str)
        if not values[sides["support"]].any():
            raise UnsatisfiableProtocol(protocol.name, [f"disjoint {column!r}: no support clip has a {column} "
                                                        "(manifest column absent or empty)"], table.source)
        seen = np.unique(values[sides["support"]])
        count = 0
        for side in ("calibration", "query"):
            leak = np.isin(values[sides[side]], seen)
            count += int(leak.sum())
            sides[side] = sides[side][~leak]
        dropped[column] = count
    support_ckpts = set(table.checkpoint[sides["support"]])
    known = sides["calibration"][np.isin(table.checkpoint[sides["calibration"]], list(support_ckpts))]
    split = Split(seed, None, sides["support"], known, sides["query"], sorted(support_ckpts),
                  sorted(set(table.checkpoint[sides["query"]])), calibration=sides["calibration"],
                  mark_unseen=protocol.unseen == UNKNOWN, leaks_dropped=dropped)
    check_labels(protocol, table, split)
    check_invariants(protocol, table, split)
    return split


def check_labels(protocol: Protocol, table: ClipTable, split: Split) -> None:
    """Every clip of the split has a label at each level beyond the study's that the protocol scores
    or balances, and two classes or more in support: else the corpus cannot ask the question.
    (Checkpoint and architecture labels are never empty: the corpus contract requires them.)"""
    problems = []
    rows = np.concatenate([split.support, split.validation, split.query])
    for level in dict.fromkeys(lv for lv in protocol.levels + protocol.balance if lv not in STUDY_LEVELS):
        labels, column = table.labels(level), LEVEL_COLUMNS[level]
        unlabelled = rows[labels[rows] == ""]
        if unlabelled.size == rows.size:
            problems.append(f"a {level} label: none of the protocol's {rows.size} clips records one "
                            f"(manifest column {column!r} absent or empty); the question needs {LEVEL_NEEDS[level]}")
            continue
        for ckpt, count in zip(*np.unique(table.checkpoint[unlabelled].astype(str), return_counts=True)):
            problems.append(f"{count} clip(s) of checkpoint {str(ckpt)!r} have no {level} label (manifest column {column!r} empty)")
        if unlabelled.size:
            continue
        classes = [str(c) for c in np.unique(labels[split.support])]
        if len(classes) < 2:
            problems.append(f"support holds {len(classes)} {level} class {classes}: the question needs {LEVEL_NEEDS[level]}")
        if level == "finetune-speaker":
            said = table.column("speaker").astype(str)
            for code in np.unique(table.checkpoint_code[rows]):
                ckpt = str(table.checkpoints[code])
                named, spoken = finetune_speaker(ckpt), {str(s) for s in said[rows[table.checkpoint_code[rows] == code]]} - {""}
                if named is not None and spoken - {named}:
                    problems.append(f"checkpoint {ckpt!r} is the fine-tune of speaker {named!r} by its name, but its "
                                    f"clips say speaker {sorted(spoken)}")
    if problems:
        raise UnsatisfiableProtocol(protocol.name, problems, table.source)


def check_invariants(protocol: Protocol, table: ClipTable, split: Split) -> None:
    """Leaks and imbalance are bugs, never results: fail loudly."""
    problems = []
    if protocol.prompts == "disjoint":
        crossing = set(table.prompt_id[split.support]) & set(table.prompt_id[split.query])
        if crossing:
            problems.append(f"{len(crossing)} prompt(s) in both support and query, e.g. {sorted(crossing)[:3]}")
    if protocol.disjoint_checkpoints:
        shared = set(split.support_checkpoints) & set(split.query_checkpoints)
        if shared:
            problems.append(f"checkpoint(s) in both support and query of an out-of-domain protocol: {sorted(shared)}")
    if set(split.support) & set(split.query):
        problems.append("a clip is in both support and query")
    if set(split.support) & set(split.calibration):
        problems.append("a clip is in both support and calibration")
    for column in protocol.disjoint:
        values = table.column(column).astype(str)
        shared = set(values[split.support]) & set(values[np.concatenate([split.calibration, split.query])])
        if shared:
            problems.append(f"{len(shared)} {column} value(s) in both support and calibration/query, e.g. {sorted(shared)[:3]}")
    for side in ("support", "query") if protocol.balance_query else ("support",):
        idx = getattr(split, side)
        for level in protocol.balance:
            _, counts = np.unique(table.labels(level)[idx], return_counts=True)
            if len(counts) and counts.min() != counts.max():
                problems.append(f"{side} classes unbalanced at {level} level: {counts.min()} to {counts.max()} clips a class")
    if problems:
        raise UnsatisfiableProtocol(protocol.name, problems, table.source)
