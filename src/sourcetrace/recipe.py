"""Corpus recipes: which checkpoints, prompts and vocoder conditions make up a synthetic corpus.

A recipe's `[corpus]` table names, per architecture, where its checkpoints are (a `sourcetrace
train` run folder for the scheduled and zero-init ones, and optionally a pretrained and a
fine-tuned checkpoint), the prompt set, and the vocoders by name. `expand` turns it into the exact
list of clips: every checkpoint with its architecture's own vocoder ("default"), and every
checkpoint of the `swap_roles` once more with each *other* mel architecture's vocoder ("swapped",
the study's vocoder conditions). End-to-end architectures (VITS) have no vocoder and no swap.

Every relative path (checkpoints, runs, vocoder weights and config files, prompts) resolves
against one `base`: the recipe's own folder, or the work folder of `sourcetrace run`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import naming
from .errors import SourcetraceError
from .naming import PRETRAINED, checkpoint_label, finetune_name, step_name, zero_init_name
from .schema import RECIPE_CORPUS, check

ROLES = tuple(role for role in naming.ROLES if role != "other")  # what a recipe can ask for
_CORPUS_KEYS = {"prompts", "seed", "schedule", "roles", "swap_roles", "speaker", "batch_size", "architectures",
                "vocoders"}
_ARCH_KEYS = {"runs", "pretrained", "pretrained_config", "finetuned", "vocoder", "trust"}
_VOCODER_KEYS = {"kind", "weights", "config", "seed"}


class RecipeError(SourcetraceError, ValueError):
    pass


@dataclass(frozen=True)
class VocoderSpec:
    name: str
    kind: str
    weights: Path | None
    config: str | None
    seed: int | None


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    runs: Path | None
    pretrained: Path | None
    pretrained_config: str
    finetuned: Path | None
    vocoder: str | None
    trust: bool


@dataclass(frozen=True)
class CorpusRecipe:
    source: Path
    prompts: Path
    seed: int
    schedule: str
    roles: tuple[str, ...]
    swap_roles: tuple[str, ...]
    speaker: str
    architectures: dict[str, ArchitectureSpec]
    vocoders: dict[str, VocoderSpec]
    batch_size: int = 1  # prompts synthesised at once where an architecture allows it


@dataclass(frozen=True)
class Job:
    """One checkpoint with one vocoder: the clips of every prompt."""

    architecture: str
    checkpoint: str          # the corpus label, e.g. "gradtts/step-000020"
    role: str
    source: Path             # a sourcetrace checkpoint folder or an official file
    vocoder: str | None      # a name in recipe.vocoders; None for end-to-end models
    swapped: bool
    speaker: str

    @property
    def condition(self) -> str:
        return f"swapped to {self.vocoder}" if self.swapped else "default"


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: [{key}] must be a table")
    return value


def _unknown(raw: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _roles(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(r not in ROLES for r in value):
        raise RecipeError(f"{where}: expected a list of roles from {', '.join(ROLES)}, got {value!r}")
    return tuple(value)


def read_recipe_file(path: str | Path) -> dict:
    """The recipe's TOML tables, read once (`synth --recipe` and `run` both start here)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc})") from None


def load_recipe(path: str | Path, base: str | Path | None = None) -> CorpusRecipe:
    """Read a recipe file and validate its [corpus] table."""
    return corpus_recipe(read_recipe_file(path), path, base)


def corpus_recipe(raw: dict, path: str | Path, base: str | Path | None = None) -> CorpusRecipe:
    """Validate a recipe's [corpus] table (read from `path`); every problem names the file and the key."""
    from sourcetrace.generators import ARCHITECTURES, generator_class
    from sourcetrace.vocoders import VOCODERS, vocoder_class

    path = Path(path)
    base = Path(base) if base is not None else path.parent
    if "corpus" not in raw:
        raise RecipeError(f"{path}: no [corpus] table")
    corpus = raw["corpus"]
    where = f"{path} [corpus]"
    _unknown(corpus, _CORPUS_KEYS, where)
    check(corpus, RECIPE_CORPUS, where, RecipeError)  # types of every key, before any is used
    for key in ("prompts", "schedule"):
        if not isinstance(corpus.get(key), str):
            raise RecipeError(f"{where}: '{key}' (a string) is required")

    def resolve(value, key: str) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise RecipeError(f"{where}: {key} must be a path string")
        return base / value

    roles = _roles(corpus.get("roles", list(ROLES)), f"{where} roles")
    swap_roles = _roles(corpus.get("swap_roles", ["pretrained", "scheduled"]), f"{where} swap_roles")
    vocoders = {}
    for name, entry in _table(corpus, "vocoders", where).items():
        vwhere = f"{path} [corpus.vocoders.{name}]"
        _unknown(entry, _VOCODER_KEYS, vwhere)
        if entry.get("kind") not in VOCODERS:
            raise RecipeError(f"{vwhere}: kind must be one of {VOCODERS.describe()}, got {entry.get('kind')!r}")
        if ("weights" in entry) == ("seed" in entry):
            raise RecipeError(f"{vwhere}: give either 'weights' (an official file) or 'seed' (an untrained vocoder)")
        config = entry.get("config")
        if config is not None and config not in vocoder_class(entry["kind"]).shipped_configs:
            config = str(resolve(config, f"vocoders.{name}.config"))  # a file, not a shipped config name
        vocoders[name] = VocoderSpec(name, entry["kind"], resolve(entry.get("weights"), f"vocoders.{name}.weights"),
                                     config, entry.get("seed"))
    architectures = {}
    for name, entry in _table(corpus, "architectures", where).items():
        awhere = f"{path} [corpus.architectures.{name}]"
        _unknown(entry, _ARCH_KEYS, awhere)
        if name not in ARCHITECTURES:
            raise RecipeError(f"{awhere}: unknown architecture; known: {ARCHITECTURES.describe()}")
        end_to_end = generator_class(name).end_to_end
        vocoder = entry.get("vocoder")
        if end_to_end and vocoder is not None:
            raise RecipeError(f"{awhere}: {name} is end to end (its own decoder makes the waveform): it takes no vocoder")
        if not end_to_end and vocoder not in vocoders:
            raise RecipeError(f"{awhere}: 'vocoder' must name one of [corpus.vocoders] ({', '.join(sorted(vocoders))}), "
                              f"got {vocoder!r}")
        architectures[name] = ArchitectureSpec(
            name, resolve(entry.get("runs"), f"{name}.runs"), resolve(entry.get("pretrained"), f"{name}.pretrained"),
            str(entry.get("pretrained_config", "default")), resolve(entry.get("finetuned"), f"{name}.finetuned"),
            vocoder, bool(entry.get("trust", False)))
    if not architectures:
        raise RecipeError(f"{where}: no [corpus.architectures.*] table")
    owners = [a.vocoder for a in architectures.values() if a.vocoder]
    if len(owners) != len(set(owners)):
        raise RecipeError(f"{where}: two architectures name the same default vocoder; each mel architecture owns one")
    batch_size = corpus.get("batch_size", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RecipeError(f"{where}: batch_size must be a positive integer")
    return CorpusRecipe(path, resolve(corpus["prompts"], "prompts"), int(corpus.get("seed", 0)), corpus["schedule"],
                        roles, swap_roles, str(corpus.get("speaker", "LJ")), architectures, vocoders, batch_size)


def _checkpoints(recipe: CorpusRecipe, arch: ArchitectureSpec) -> list[tuple[str, str, Path, str]]:
    """(label, role, source, speaker) of every checkpoint of one architecture the recipe asks for."""
    from sourcetrace.checkpoints.registry import load_schedule
    schedule = load_schedule(recipe.schedule)
    out = []
    where = f"{recipe.source} [corpus.architectures.{arch.name}]"
    if "pretrained" in recipe.roles and arch.pretrained is not None:
        out.append((checkpoint_label(arch.name, PRETRAINED), "pretrained", arch.pretrained, recipe.speaker))
    for role in ("scheduled", "zero-init"):
        if role not in recipe.roles:
            continue
        if arch.runs is None:
            raise RecipeError(f"{where}: role {role!r} needs 'runs' (a `sourcetrace train` run folder)")
        names = ([step_name(s) for s in schedule.steps] if role == "scheduled"
                 else [zero_init_name(s) for s in schedule.zero_init_seeds])
        out.extend((checkpoint_label(arch.name, n), role, arch.runs / "checkpoints" / n, recipe.speaker) for n in names)
    if "finetuned" in recipe.roles and arch.finetuned is not None:
        speaker = schedule.finetune_speaker
        out.append((checkpoint_label(arch.name, finetune_name(speaker)), "finetuned", arch.finetuned, speaker))
    return out


def expand(recipe: CorpusRecipe) -> list[Job]:
    """The recipe's jobs in a fixed order: architectures by name, checkpoints by role and step,
    the default vocoder before the swapped ones."""
    jobs = []
    mel_vocoders = {a.name: a.vocoder for a in recipe.architectures.values() if a.vocoder}
    for name in sorted(recipe.architectures):
        arch = recipe.architectures[name]
        for label, role, source, speaker in _checkpoints(recipe, arch):
            jobs.append(Job(name, label, role, source, arch.vocoder, False, speaker))
            if arch.vocoder is None or role not in recipe.swap_roles:
                continue
            for other in sorted(mel_vocoders):
                if other != name:
                    jobs.append(Job(name, label, role, source, mel_vocoders[other], True, speaker))
    return jobs
