"""The types of every file a user hands to sourcetrace (protocols, results, recipes), in one place.

A tiny declarative checker: a file is checked against its schema when it is loaded, and every
problem names the file and the key (`protocol.table1_row must be an integer 1..99, not '../etc'`),
instead of surfacing later as a TypeError, or as a name that writes outside an output folder.
Schemas are plain values: a type (`str`, `bool`, `dict`, ...), `Int`, `Number`, `Text`, `OneOf`,
`ListOf`, `MapOf`, `Record`, and `Optional` for a record field that may be absent (or null).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sourcetrace.core.naming import ROLES

HEX64 = r"[0-9a-f]{64}"


@dataclass(frozen=True)
class Int:
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Number:
    """A finite int or float (never a bool), within min..max where given."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Text:
    pattern: str
    what: str  # said in the message, e.g. "64 lowercase hex digits"


@dataclass(frozen=True)
class OneOf:
    choices: tuple
    what: str = "value"


@dataclass(frozen=True)
class ListOf:
    item: object
    non_empty: bool = False


@dataclass(frozen=True)
class MapOf:
    value: object
    key: object = str


@dataclass(frozen=True)
class Optional:
    spec: object


@dataclass(frozen=True)
class Record:
    fields: dict
    extra: bool = True  # unknown keys allowed (a file may carry more than this version reads)


def _kind(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table", type(None): "null"}.get(type(value), type(value).__name__)


def _problems(value, spec, where: str, out: list[str]) -> None:
    name = where or "the file"
    if isinstance(spec, Optional):
        if value is not None:
            _problems(value, spec.spec, where, out)
    elif isinstance(spec, type):
        ok = isinstance(value, spec) and not (spec is int and isinstance(value, bool))
        if not ok:
            out.append(f"{name} must be {_kind(spec())}, not {value!r}")
    elif isinstance(spec, Int):
        bounds = f"{'' if spec.min is None else spec.min}..{'' if spec.max is None else spec.max}"
        if (not isinstance(value, int) or isinstance(value, bool) or (spec.min is not None and value < spec.min)
                or (spec.max is not None and value > spec.max)):
            out.append(f"{name} must be an integer{'' if bounds == '..' else ' ' + bounds}, not {value!r}")
    elif isinstance(spec, Number):
        bounds = f"{'' if spec.min is None else spec.min}..{'' if spec.max is None else spec.max}"
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max)):
            out.append(f"{name} must be a number{'' if bounds == '..' else ' in ' + bounds}, not {value!r}")
    elif isinstance(spec, Text):
        if not isinstance(value, str) or not re.fullmatch(spec.pattern, value):
            out.append(f"{name} must be {spec.what}, not {value!r}")
    elif isinstance(spec, OneOf):
        if value not in spec.choices or isinstance(value, (list, dict)):
            out.append(f"{name} must be one of {', '.join(map(str, spec.choices))}, not {value!r} (unknown {spec.what})")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            out.append(f"{name} must be a list, not {value!r}")
        elif spec.non_empty and not value:
            out.append(f"{name} must not be empty")
        else:
            for i, item in enumerate(value):
                _problems(item, spec.item, f"{where}[{i}]", out)
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            out.append(f"{name} must be a table, not {value!r}")
        else:
            for key, item in value.items():
                _problems(key, spec.key, f"{where} key {key!r}" if where else f"key {key!r}", out)
                _problems(item, spec.value, f"{where}.{key}" if where else str(key), out)
    elif isinstance(spec, Record):
        if not isinstance(value, dict):
            out.append(f"{name} must be a table, not {value!r}")
            return
        for key, sub in spec.fields.items():
            path = f"{where}.{key}" if where else key
            if key not in value:
                if not isinstance(sub, Optional):
                    out.append(f"missing required key {path!r}")
                continue
            _problems(value[key], sub, path, out)
        unknown = sorted(set(value) - set(spec.fields))
        if unknown and not spec.extra:
            out.append(f"{where + ': ' if where else ''}unknown key(s) {unknown}; allowed: {sorted(spec.fields)}")
    else:
        raise TypeError(f"not a schema: {spec!r}")


def problems(value, spec, where: str = "") -> list[str]:
    """Every way `value` departs from `spec`, each naming its key (for readers that add a line number);
    `where`: the key `value` sits at in its file, said before each key."""
    out: list[str] = []
    _problems(value, spec, where, out)
    return out


def check(value, spec, source: str, error: type[Exception] = ValueError):
    """Return `value` when it fits `spec`; else raise `error` naming `source` and every problem."""
    out = problems(value, spec)
    if out:
        shown = "; ".join(out[:10]) + (f"; ... and {len(out) - 10} more" if len(out) > 10 else "")
        raise error(f"{source}: {shown}")
    return value


# ---- the schemas -----------------------------------------------------------------------------

# The typed values of a corpus manifest, spelled as CSV text (sourcetrace.corpus.columns.ClipRecord says
# which column has which): one spelling each, the one sourcetrace writes, so a file reads back to its bytes.
MANIFEST_TEXT = str
MANIFEST_INT = Text(r"-?(0|[1-9][0-9]*)", "an integer written as sourcetrace writes it (digits, no leading zeros)")
MANIFEST_SECONDS = Text(r"(0|[1-9][0-9]*)(\.[0-9]+)?", "a number of seconds written as sourcetrace writes it (e.g. 2.768)")
MANIFEST_BOOL = OneOf(("1", "0"), "boolean spelling: sourcetrace writes 1 for true and 0 for false")

# The label levels a protocol can score (benchmark/protocol.py LEVEL_COLUMNS says where each label comes from);
# the study's two are what a protocol balances unless it says otherwise.
STUDY_LEVELS = ("checkpoint", "architecture")
LEVELS = STUDY_LEVELS + ("implementation", "vocoder-family", "finetune-speaker")
CHECKPOINT_ROLES = ROLES

_SELECTION = Record({
    "roles": Optional(ListOf(OneOf(CHECKPOINT_ROLES + ("all",), "role"))),
    "scheduled_positions": Optional(ListOf(Int(min=1))),
    "random_scheduled": Optional(Int(min=0)),
    "exclude_support": Optional(bool), "holdout": Optional(bool), "exclude_holdout": Optional(bool),
    "where": Optional(MapOf(ListOf(str, non_empty=True))),  # manifest column -> the values a clip may have
}, extra=False)

PROTOCOL = Record({
    "title": str,
    "version": Int(min=0),
    "table1_row": Optional(Int(1, 99)),
    "prompts": OneOf(("disjoint", "mixed", "shipped"), "prompt mode"),
    "vocoder": OneOf(("default", "same", "mixed", "all"), "vocoder mode"),
    "architectures": Optional(ListOf(str, non_empty=True)),
    "architectures_with_roles": Optional(bool),
    "levels": ListOf(OneOf(LEVELS, "level"), non_empty=True),
    "support": _SELECTION,
    "query": _SELECTION,
    "calibration": Optional(_SELECTION),
    "where": Optional(MapOf(ListOf(str, non_empty=True))),
    "disjoint": Optional(ListOf(str, non_empty=True)),
    "unseen": Optional(OneOf(("unknown",), "unseen mode")),
    "dataset": Optional(str),  # the `corpus import --format` name of the set whose own splits these are
    "threshold": Optional(str),  # 'eer' or 'fpr=R': attribution.unknown.check_threshold_rule, at load
    "ood_scores": Optional(ListOf(str, non_empty=True)),
    "checkpoints": Optional(OneOf(("shared", "disjoint"), "checkpoint mode")),
    "balance": Optional(ListOf(OneOf(LEVELS, "level"))),
    "balance_query": Optional(bool),
}, extra=False)

_LEVEL_RESULT = Record({"mean": Number(), "std": Number(), "per_seed": list, "confusion": dict})
RESULT = Record({
    "schema_version": int,  # results.py names the version it reads
    "protocol": Record({"name": str, "version": Int(min=0), "sha256": Text(HEX64, "64 lowercase hex digits"), "title": str,
                        "table1_row": Optional(Int(1, 99)), "definition": Optional(dict)}),
    "corpus": Record({"sha256": Text(HEX64, "64 lowercase hex digits"), "path": Optional(str),
                      "n_clips": Optional(Int(min=0))}),
    "features": Record({"extractor": str, "fingerprint_sha256": Text(HEX64, "64 lowercase hex digits"),
                        "fingerprint": Optional(dict)}),
    "attributor": Record({"name": str, "id": str}),
    "seeds": ListOf(int),
    "levels": MapOf(_LEVEL_RESULT, key=OneOf(LEVELS, "level")),
    "provenance": dict,
    "figures": Optional(MapOf(str)),
    "identity": Optional(dict),
    # a result under laundering (bench --laundered): clean support, the query from this derived corpus
    "laundering": Optional(Record({"transform": Text(r"\S+", "a transform chain (codec:mp3:32k+noise:snr=10)"), "seed": Optional(int),
                                   "corpus": Record({"sha256": Text(HEX64, "64 lowercase hex digits"), "path": Optional(str),
                                                     "n_clips": Optional(Int(min=0))})})),
})

# A recipe's [corpus] table: types only; recipe.py checks names, roles and combinations.
_PATH = Text(r"[^\x00]+", "a path string")
RECIPE_CORPUS = Record({
    "prompts": _PATH, "schedule": str, "seed": Optional(int), "speaker": Optional(str),
    "batch_size": Optional(Int(min=1)), "roles": Optional(ListOf(str)), "swap_roles": Optional(ListOf(str)),
    "finetune_speakers": Optional(ListOf(str)), "swap_vocoders": Optional(ListOf(str)),
    "architectures": Optional(MapOf(Record({
        "runs": Optional(_PATH), "pretrained": Optional(_PATH), "pretrained_config": Optional(str),
        "finetuned": Optional(_PATH), "vocoder": Optional(str), "trust": Optional(bool),
        "roles": Optional(ListOf(str)), "references": Optional(ListOf(_PATH, non_empty=True))}, extra=False))),
    "vocoders": Optional(MapOf(Record({
        "kind": Optional(str), "weights": Optional(_PATH), "config": Optional(str), "seed": Optional(int)},
        extra=False))),
}, extra=False)

# The other tables of a study recipe (`sourcetrace run`): types and bounds; recipe.py checks combinations.
RECIPE_STUDY = Record({"title": str, "seed": Optional(int), "device": Optional(str),
                       "threads": Optional(Int(min=1))}, extra=False)
_MINI_SIZES = Record({"train": Int(min=1), "val": Int(min=1), "test": Int(min=1), "hifitts": Int(min=1)}, extra=False)
RECIPE_DATA = Record({"make_mini": Optional(_MINI_SIZES), "ljspeech": Optional(_PATH), "hifitts": Optional(_PATH),
                      "split": Optional(_PATH)}, extra=False)
RECIPE_TRAINING = Record({"config": str, "pretrained": Optional(OneOf(("train", "official"), "pretrained mode")),
                          "pretrained_seed": Optional(int), "batch_size": Optional(Int(min=1)),
                          "tensorboard": Optional(bool), "deterministic": Optional(bool)}, extra=False)
RECIPE_FEATURES = Record({"extractors": ListOf(Record({"spec": str, "attributor": str, "random": Optional(bool)},
                                                      extra=False), non_empty=True),
                          "max_seconds": Optional(Number())}, extra=False)  # longer clips refused (0: no limit)
RECIPE_BENCHMARK = Record({"suite": Optional(str), "protocols": Optional(ListOf(str, non_empty=True)),
                           "seeds": Optional(ListOf(int, non_empty=True))}, extra=False)
RECIPE_SLURM = Record({"partition": Optional(str), "cpu_partition": Optional(str), "gpus_per_training": Optional(Int(min=0)),
                       "synth_shards": Optional(Int(min=1)), "gpus_per_synth": Optional(Int(min=0)),
                       "features_shards": Optional(Int(min=1)), "gpus_per_features": Optional(Int(min=0)),
                       "cpus_per_task": Optional(Int(min=1)), "mem_gb": Optional(Number()),
                       "timeout_min": Optional(Int(min=1))}, extra=False)

# A leaderboard board (benchmark/board.py): board.json, and what a submitted result must add to RESULT.
BOARD = Record({
    "format": OneOf(("sourcetrace-board",), "format"),
    "format_version": Int(1, 1),
    "corpus_sha256": Text(HEX64, "64 lowercase hex digits"),
    "protocols": MapOf(Record({"sha256": Text(HEX64, "64 lowercase hex digits"), "version": Int(min=0), "title": str,
                               "table1_row": Optional(Int(1, 99)), "levels": ListOf(OneOf(LEVELS, "level"), non_empty=True),
                               "definition": dict})),
    "created": str,
    "sourcetrace": str,
}, extra=False)
PER_SEED = ListOf(Record({"seed": int, "variant": Optional(str), "macro_f1": Number()}), non_empty=True)

# A result's open-set block (benchmark/openset.py run_open_set writes it; results.py open_set_problems
# checks it for the leaderboard): every key run_open_set writes, each rate a number in 0..1.
_RATE = Number(0, 1)
_OPEN_SET_SCORES = Record({"macro_f1": _RATE, "accuracy": _RATE, "n": Int(min=1)})
OPEN_SET = Record({
    "dataset": Optional(str), "level": Optional(str), "threshold_rule": str, "unknown_label": str,
    "closed_set": _OPEN_SET_SCORES,
    "n_support": Int(min=1), "n_calibration": Int(min=1), "n_query": Int(min=1),
    "scores": MapOf(Record({
        "open_set": _OPEN_SET_SCORES,
        "detection": Record({"eer": _RATE, "eer_threshold": Number(), "auroc": _RATE, "fpr95": _RATE,
                             "n_known": Int(min=1), "n_unknown": Int(min=1), "threshold": Number(),
                             "false_unknown_rate": _RATE, "missed_unknown_rate": _RATE}),
        # A calibration of known systems only (a stated-FPR rule) has no EER: null.
        "calibration": Record({"eer": Optional(_RATE), "threshold": Number(), "n_known": Int(min=1),
                               "n_unknown": Int(min=0)}),
    })),
})

# The download catalogue of `sourcetrace fetch` (pipeline/fetch.py): datasets/sources.toml and
# generators/sources.toml (FETCH_SOURCE, a table per artefact), attribution/extractors/models/sources.toml
# (FETCH_MODEL, a table per shipped SSL model). Official checkpoints: checkpoints/registry.toml.
_RELATIVE = Text(r"(?!/)(?!.*(^|/)\.\.(/|$))[^\x00]+", "a relative path inside the work folder")
_HTTP_URL = Text(r"https?://\S+", "an http(s) URL")
FETCH_SOURCE = MapOf(Record({
    "title": str, "urls": ListOf(_HTTP_URL, non_empty=True), "size": Optional(Int(min=1)),
    "sha256": Optional(Text(f"({HEX64})?", "64 lowercase hex digits, or empty: not published")),
    "licence": str, "citation": str, "destination": _RELATIVE,
    "unpack": OneOf(("file", "archive", "stream"), "unpack mode"), "unzip": Optional(bool),
    "members": Optional(ListOf(str, non_empty=True)), "strip": Optional(Int(min=0)),
    "done_when": Optional(ListOf(_RELATIVE, non_empty=True)), "speakers": Optional(ListOf(str, non_empty=True)),
}, extra=False))
FETCH_MODEL = MapOf(Record({
    "revision": Text(r"([0-9a-f]{40})?", "a 40-hex-digit commit, or empty: resolved and locked on first fetch"),
    "allow": ListOf(str, non_empty=True), "licence": str, "citation": str, "size": Optional(Int(min=1)),
}, extra=False))
