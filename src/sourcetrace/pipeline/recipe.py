"""Corpus recipes: which checkpoints, prompts and vocoder conditions make up a synthetic corpus.

A recipe's `[corpus]` table names, per architecture, where its checkpoints are (a `sourcetrace
train` run folder for the scheduled and zero-init ones, and optionally a pretrained and a
fine-tuned checkpoint), the prompt set, and the vocoders by name. `expand` turns it into the exact
list of clips: every checkpoint with its architecture's own vocoder ("default"), and every
checkpoint of the `swap_roles` once more with each *other* mel architecture's vocoder ("swapped",
the study's vocoder conditions) and with each of the `swap_vocoders` (vocoders no architecture
owns: other families, beyond the study). End-to-end architectures (VITS) have no vocoder and no swap.

Every relative path (checkpoints, runs, vocoder weights and config files, prompts) resolves
against one `base`: the recipe's own folder, or the work folder of `sourcetrace run`.

`sourcetrace run` reads the whole file once into a `StudyRecipe`: one typed, validated object per
table ([study], [data], [training], [corpus], [features], [benchmark], [slurm]); the stages read
those objects, never the raw TOML (which is kept only to fingerprint a stage's inputs).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.benchmark.protocol import ProtocolError, load_protocol, load_suite
from sourcetrace.checkpoints.registry import load_schedule
from sourcetrace.core import naming
from sourcetrace.core.audio import MAX_CLIP_SECONDS
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import read_user_text
from sourcetrace.core.naming import PRETRAINED, STORED_VOICE, checkpoint_label, finetune_name, step_name, zero_init_name
from sourcetrace.core.plugins import GENERATORS, VOCODERS, ArchitectureTraits, architecture_traits
from sourcetrace.core.schema import (
    RECIPE_BENCHMARK,
    RECIPE_CORPUS,
    RECIPE_DATA,
    RECIPE_FEATURES,
    RECIPE_SLURM,
    RECIPE_STUDY,
    RECIPE_TRAINING,
    check,
)

ROLES = tuple(role for role in naming.ROLES if role != "other")  # what a recipe can ask for


class RecipeError(SourcetraceError, ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    """Task `index` of `count` (counted from 0) of a sharded stage: it takes every `count`-th unit of
    work starting at `index`. Spelled "3/16" on the command line, in unit names and in logs."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, _, count = text.partition("/")
        if not (index.isdigit() and count.isdigit()):
            raise UsageError(f"--shard {text!r}: expected K/N, e.g. 3/16 (task K of N, counted from 0)")
        return cls(int(index), int(count))

    def take(self, items: list) -> list:
        return items[self.index::self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class VocoderSpec:
    name: str
    kind: str
    weights: Path | None
    config: str | None
    seed: int | None


SPEAKER_FIELD = "{speaker}"  # in a `finetuned` path: the fine-tune speaker's id


@dataclass(frozen=True)
class Reference:
    """The voice a zero-shot generator speaks a prompt in: a reference clip, or a speaker stored in
    the checkpoint (`speaker:NAME`). `name` is the reference as the recipe (or command line) writes
    it, what a corpus row records (portable); `voice` is what `Generator.use_reference` gets: the
    clip's path, found from where the recipe is, or `speaker:NAME` unchanged."""

    name: str
    voice: str

    @classmethod
    def parse(cls, text: str, resolve: Callable[[str], Path]) -> Reference:
        if not text.startswith(STORED_VOICE):
            return cls(text, str(resolve(text)))
        if not text.removeprefix(STORED_VOICE).strip():
            raise UsageError(f"reference {text!r}: `{STORED_VOICE}` needs the name of a speaker the checkpoint stores")
        return cls(text, text)


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    runs: Path | None
    pretrained: Path | None
    pretrained_config: str
    finetuned: Path | None   # the fine-tuned checkpoint; may hold {speaker} (one per fine-tune speaker)
    vocoder: str | None
    trust: bool
    roles: tuple[str, ...]   # the checkpoint roles wanted of it: its own `roles`, else [corpus] roles
    references: tuple[Reference, ...] = ()  # zero-shot architectures: prompt i speaks in the voice of reference i mod n

    def finetuned_for(self, speaker: str) -> Path:
        """The fine-tuned checkpoint of one speaker: `finetuned` with {speaker} filled in."""
        return Path(str(self.finetuned).replace(SPEAKER_FIELD, speaker))


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
    finetune_speakers: tuple[str, ...] = ()  # HiFi-TTS speakers fine-tuned on (default: the schedule's)
    swap_vocoders: tuple[str, ...] = ()      # vocoders no architecture owns, swapped in like the owned ones


@dataclass(frozen=True)
class Job:
    """One checkpoint with one vocoder: the clips of every prompt."""

    architecture: str
    label: str               # the checkpoint's label in the corpus (its `checkpoint` column), e.g. "gradtts/step-000020"
    role: str
    checkpoint_path: Path    # the checkpoint: a sourcetrace checkpoint folder or an official file
    vocoder: str | None      # a name in recipe.vocoders; None for end-to-end models
    swapped: bool
    speaker: str
    references: tuple[Reference, ...] = ()

    def reference(self, prompt_index: int) -> Reference | None:
        """The reference (a clip or a stored voice) of the prompt at `prompt_index` of the prompt set
        (zero-shot jobs), else None."""
        return self.references[prompt_index % len(self.references)] if self.references else None

    @property
    def condition(self) -> str:
        return f"swapped to {self.vocoder}" if self.swapped else "default"


def _roles(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(r not in ROLES for r in value):
        raise RecipeError(f"{where}: expected a list of roles from {', '.join(ROLES)}, got {value!r}")
    return tuple(value)


def read_recipe_file(path: str | Path) -> dict:
    """The recipe's TOML tables, read once (`synth --recipe` and `run` both start here)."""
    try:
        return tomllib.loads(read_user_text(path))
    except UsageError as exc:  # names the file already
        raise RecipeError(str(exc)) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc})") from None


def load_recipe(path: str | Path, base: str | Path | None = None) -> CorpusRecipe:
    """Read a recipe file and validate its [corpus] table."""
    return corpus_recipe(read_recipe_file(path), path, base)


def _names_a_config_file(config: str) -> bool:
    """A vocoder `config` that is a file rather than a shipped config name, told without the vocoder
    class (shipped names carry no suffix or folder: tests/test_plan.py checks every built-in's)."""
    return "/" in config or bool(Path(config).suffix)


def corpus_recipe(raw: dict, path: str | Path, base: str | Path | None = None, classes: bool = True) -> CorpusRecipe:
    """Validate a recipe's [corpus] table (read from `path`); every problem names the file and the key.
    `classes=False` reads it without importing the vocoder classes (no torch: `run --plan`): a vocoder's
    `config` is told a file from a shipped config name by its spelling. The architectures' checks import
    no class for a built-in (core.plugins.architecture_traits), so `run` and `--plan` make the same."""

    path = Path(path)
    base = Path(base) if base is not None else path.parent
    if "corpus" not in raw:
        raise RecipeError(f"{path}: no [corpus] table")
    corpus = raw["corpus"]
    where = f"{path} [corpus]"
    check(corpus, RECIPE_CORPUS, where, RecipeError)  # every key known and of its type, before any is used

    def resolve(value: str | None) -> Path | None:
        return None if value is None else base / value

    roles = _roles(corpus.get("roles", list(ROLES)), f"{where} roles")
    swap_roles = _roles(corpus.get("swap_roles", ["pretrained", "scheduled"]), f"{where} swap_roles")
    vocoders = {}
    for name, entry in corpus.get("vocoders", {}).items():
        vwhere = f"{path} [corpus.vocoders.{name}]"
        if entry.get("kind") not in VOCODERS:
            raise RecipeError(f"{vwhere}: kind must be one of {VOCODERS.describe()}, got {entry.get('kind')!r}")
        if ("weights" in entry) == ("seed" in entry):
            raise RecipeError(f"{vwhere}: give either 'weights' (an official file) or 'seed' (an untrained vocoder)")
        config = entry.get("config")
        if config is not None and (config not in _shipped_configs(entry["kind"]) if classes
                                   else _names_a_config_file(config)):
            config = str(resolve(config))  # a file, not a shipped config name
        vocoders[name] = VocoderSpec(name, entry["kind"], resolve(entry.get("weights")),
                                     config, entry.get("seed"))
    architectures = {}
    for name, entry in corpus.get("architectures", {}).items():
        awhere = f"{path} [corpus.architectures.{name}]"
        if name not in GENERATORS:
            raise RecipeError(f"{awhere}: unknown architecture; known: {GENERATORS.describe()}")
        try:
            references = tuple(Reference.parse(r, resolve) for r in entry.get("references", ()))
        except ValueError as exc:
            raise RecipeError(f"{awhere}: {exc}") from None
        vocoder = entry.get("vocoder")
        _check_against_traits(name, references, vocoder, vocoders, awhere)
        architectures[name] = ArchitectureSpec(
            name, resolve(entry.get("runs")), resolve(entry.get("pretrained")),
            str(entry.get("pretrained_config", "default")), resolve(entry.get("finetuned")),
            vocoder, bool(entry.get("trust", False)),
            _roles(entry["roles"], f"{awhere} roles") if "roles" in entry else roles, references)
    if not architectures:
        raise RecipeError(f"{where}: no [corpus.architectures.*] table")
    owners = [a.vocoder for a in architectures.values() if a.vocoder]
    if len(owners) != len(set(owners)):
        raise RecipeError(f"{where}: two architectures name the same default vocoder; each mel architecture owns one")
    batch_size = corpus.get("batch_size", 1)
    swap_vocoders = tuple(corpus.get("swap_vocoders", ()))
    if len(set(swap_vocoders)) != len(swap_vocoders):
        raise RecipeError(f"{where}: swap_vocoders names a vocoder twice: {list(swap_vocoders)}")
    for name in swap_vocoders:
        if name not in vocoders or name in owners:
            raise RecipeError(f"{where}: swap_vocoders names {name!r}, which must be one of [corpus.vocoders] that no "
                              f"architecture owns ({', '.join(sorted(set(vocoders) - set(owners))) or 'none'})")
    speakers = _finetune_speakers(corpus, where)
    for arch in architectures.values():
        if arch.finetuned is not None and len(speakers) > 1 and SPEAKER_FIELD not in str(arch.finetuned):
            raise RecipeError(f"{path} [corpus.architectures.{arch.name}]: with {len(speakers)} finetune_speakers the "
                              f"'finetuned' path must hold {SPEAKER_FIELD} (one checkpoint per speaker), "
                              f"e.g. \"runs/{arch.name}-ft-{SPEAKER_FIELD}/checkpoints/ft-{SPEAKER_FIELD}\"")
    return CorpusRecipe(path, resolve(corpus["prompts"]), int(corpus.get("seed", 0)), corpus["schedule"],
                        roles, swap_roles, str(corpus.get("speaker", "LJ")), architectures, vocoders, batch_size,
                        speakers, swap_vocoders)


def _shipped_configs(kind: str) -> tuple[str, ...]:
    from sourcetrace.vocoders import vocoder_class

    return vocoder_class(kind).shipped_configs


def _unknown_vocoder(vocoder, vocoders: dict, where: str) -> str:
    return f"{where}: 'vocoder' must name one of [corpus.vocoders] ({', '.join(sorted(vocoders))}), got {vocoder!r}"


def _check_against_traits(name: str, references: tuple, vocoder: str | None, vocoders: dict, where: str) -> None:
    """What the architecture is (core.plugins.architecture_traits, no torch for a built-in) says of its
    entry: references for zero-shot models only, a vocoder for mel models only."""
    traits = _traits(name, where)
    if traits.zero_shot != bool(references):
        raise RecipeError(f"{where}: " + ("a zero-shot architecture speaks in the voice of reference clips: give "
                                          "'references' (a list of audio files, or `speaker:NAME` for a "
                                          "voice the checkpoint stores)" if not references else
                                          f"{name} speaks in its trained voice: it takes no 'references'"))
    if traits.end_to_end and vocoder is not None:
        raise RecipeError(f"{where}: {name} is end to end (its own decoder makes the waveform): it takes no vocoder")
    if not traits.end_to_end and vocoder not in vocoders:
        raise RecipeError(_unknown_vocoder(vocoder, vocoders, where))


def _traits(name: str, where: str) -> ArchitectureTraits:
    try:
        return architecture_traits(name)
    except SourcetraceError as exc:  # a plug-in whose class cannot be loaded
        raise RecipeError(f"{where}: {exc}") from None


def _finetune_speakers(corpus: dict, where: str) -> tuple[str, ...]:
    """[corpus] finetune_speakers, else the schedule's one speaker (the study's 9136)."""
    if "finetune_speakers" not in corpus:
        return (load_schedule(corpus["schedule"]).finetune_speaker,)
    speakers = corpus["finetune_speakers"]
    if not speakers or len(set(speakers)) != len(speakers) or not all(naming.is_speaker_id(s) for s in speakers):
        raise RecipeError(f"{where}: finetune_speakers must be distinct speaker ids (letters, digits, '-', '_'), "
                          f"got {speakers!r}")
    return tuple(speakers)


def _checkpoints(recipe: CorpusRecipe, arch: ArchitectureSpec) -> list[tuple[str, str, Path, str]]:
    """(label, role, source, speaker) of every checkpoint of one architecture the recipe asks for."""
    schedule = load_schedule(recipe.schedule)
    out = []
    where = f"{recipe.source} [corpus.architectures.{arch.name}]"
    if "pretrained" in arch.roles and arch.pretrained is not None:
        out.append((checkpoint_label(arch.name, PRETRAINED), "pretrained", arch.pretrained, recipe.speaker))
    for role in ("scheduled", "zero-init"):
        if role not in arch.roles:
            continue
        if arch.runs is None:
            raise RecipeError(f"{where}: role {role!r} needs 'runs' (a `sourcetrace train` run folder)")
        names = ([step_name(s) for s in schedule.steps] if role == "scheduled"
                 else [zero_init_name(s) for s in schedule.zero_init_seeds])
        out.extend((checkpoint_label(arch.name, n), role, arch.runs / "checkpoints" / n, recipe.speaker) for n in names)
    if "finetuned" in arch.roles and arch.finetuned is not None:
        out.extend((checkpoint_label(arch.name, finetune_name(speaker)), "finetuned", arch.finetuned_for(speaker), speaker)
                   for speaker in recipe.finetune_speakers)
    return out


def expand(recipe: CorpusRecipe) -> list[Job]:
    """The recipe's jobs in a fixed order: architectures by name, checkpoints by role and step,
    the default vocoder before the swapped ones."""
    jobs = []
    mel_vocoders = {a.name: a.vocoder for a in recipe.architectures.values() if a.vocoder}
    for name in sorted(recipe.architectures):
        arch = recipe.architectures[name]
        for label, role, source, speaker in _checkpoints(recipe, arch):
            jobs.append(Job(name, label, role, source, arch.vocoder, False, speaker, arch.references))
            if arch.vocoder is None or role not in recipe.swap_roles:
                continue
            for other in sorted(mel_vocoders):
                if other != name:
                    jobs.append(Job(name, label, role, source, mel_vocoders[other], True, speaker))
            jobs.extend(Job(name, label, role, source, vocoder, True, speaker) for vocoder in recipe.swap_vocoders)
    return jobs


# ---- the whole study recipe (`sourcetrace run`) ------------------------------------------------
@dataclass(frozen=True)
class StudySettings:
    title: str
    seed: int
    device: str
    threads: int | None  # fixes the CPU thread count (the same audio bytes on every backend); None: the default


@dataclass(frozen=True)
class MiniSizes:
    """Clip counts of the espeak-ng stand-in datasets (per fine-tune speaker for HiFi-TTS)."""

    train: int
    val: int
    test: int
    hifitts: int


@dataclass(frozen=True)
class DataSettings:
    make_mini: MiniSizes | None  # build espeak-ng stand-ins; else the real datasets below
    ljspeech: str | None
    hifitts: str | None
    split: str | None            # a standard split file for LJSpeech


@dataclass(frozen=True)
class TrainingSettings:
    config: str
    pretrained: str              # "official" checkpoints, or "train" a stand-in
    pretrained_seed: int
    batch_size: int | None       # None: the schedule's
    tensorboard: bool
    deterministic: bool          # reproducible kernels only (generators/training.py `determinism`)


@dataclass(frozen=True)
class ExtractorEntry:
    spec: str
    attributor: str
    random: bool                 # an SSL model built from its named config with the study's seed


@dataclass(frozen=True)
class BenchmarkSettings:
    suite: str | None                # a named suite (benchmark/suites.toml) ...
    protocols: tuple[str, ...]       # ... or protocol names / files
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    cpu_partition: str | None = None  # for the jobs that ask no GPU; default: partition
    gpus_per_training: int = 1
    synth_shards: int = 1
    gpus_per_synth: int = 0
    features_shards: int = 1
    gpus_per_features: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60


@dataclass(frozen=True)
class StudyRecipe:
    source: Path
    tables: dict                 # the TOML as read: fingerprints a stage's inputs, nothing else
    study: StudySettings
    data: DataSettings
    training: TrainingSettings
    corpus: CorpusRecipe
    features: tuple[ExtractorEntry, ...]
    max_clip_seconds: float | None  # [features] max_seconds: longer clips are refused (None: no limit)
    benchmark: BenchmarkSettings
    slurm: SlurmSettings


def _check_protocols(benchmark: dict, where: str) -> None:
    """The suite or every protocol a [benchmark] table names exists and parses (before any stage runs)."""
    try:
        if "suite" in benchmark:
            load_suite(benchmark["suite"])
        for name in benchmark.get("protocols", ()):
            load_protocol(name)
    except (ProtocolError, OSError) as exc:
        raise RecipeError(f"{where}: {exc}") from None


def _check_trainable(arch: ArchitectureSpec, settings: TrainingSettings, where: str) -> None:
    """An inference-only architecture is asked for no training run."""
    reason = _traits(arch.name, where).inference_only
    trained = [r for r in ("scheduled", "finetuned") if r in arch.roles and (r == "scheduled" or arch.finetuned)]
    if reason is not None and (trained or (settings.pretrained == "train" and arch.pretrained is not None)):
        raise RecipeError(f"{where}: {arch.name} is inference-only ({reason}); "
                          "give it roles = [\"zero-init\"] (seeded models) or an official 'pretrained' with "
                          "[training] pretrained = 'official'")


STUDY_TABLES = ("study", "data", "training", "corpus", "features", "benchmark", "slurm")


def load_study_recipe(path: str | Path, base: str | Path, classes: bool = True) -> StudyRecipe:
    """Read and validate every table of a study recipe; relative paths resolve against `base` (the work
    folder). `classes=False`: without the vocoder classes (see `corpus_recipe`)."""
    raw = read_recipe_file(path)
    extra = sorted(set(raw) - set(STUDY_TABLES))
    if extra:
        raise RecipeError(f"{path}: unknown table(s) {', '.join(extra)}; allowed: {', '.join(STUDY_TABLES)}")
    for table in ("study", "data", "training", "features", "benchmark"):
        if not isinstance(raw.get(table), dict):
            raise RecipeError(f"{path}: [{table}] table is required by `sourcetrace run`")
    tables = {name: check(raw.get(name, {}), schema, f"{path} [{name}]", RecipeError) for name, schema in
              (("study", RECIPE_STUDY), ("data", RECIPE_DATA), ("training", RECIPE_TRAINING),
               ("features", RECIPE_FEATURES), ("benchmark", RECIPE_BENCHMARK), ("slurm", RECIPE_SLURM))}
    study, data, training, benchmark = tables["study"], tables["data"], tables["training"], tables["benchmark"]
    if ("suite" in benchmark) == ("protocols" in benchmark):
        raise RecipeError(f"{path} [benchmark]: give either suite (a named suite) or protocols (a list of protocols)")
    _check_protocols(benchmark, f"{path} [benchmark]")
    if ("make_mini" in data) == ("ljspeech" in data):
        raise RecipeError(f"{path} [data]: give either make_mini (espeak-ng datasets) or ljspeech (+ hifitts) paths")
    if tables["features"].get("max_seconds", 0) < 0:
        raise RecipeError(f"{path} [features]: max_seconds must be >= 0 (0: no limit), got {tables['features']['max_seconds']}")
    corpus = corpus_recipe(raw, path, base=base, classes=classes)
    settings = TrainingSettings(training["config"], training.get("pretrained", "official"),
                                training.get("pretrained_seed", 1000), training.get("batch_size"),
                                training.get("tensorboard", True), training.get("deterministic", True))
    for arch in corpus.architectures.values():
        where = f"{path} [corpus.architectures.{arch.name}]"
        _check_trainable(arch, settings, where)
        if arch.finetuned is not None and arch.pretrained is None:
            raise RecipeError(f"{where}: a fine-tune starts from the pretrained checkpoint: give 'pretrained' too")
        if settings.pretrained == "train" and arch.pretrained is not None and naming.step_of(arch.pretrained.name) is None:
            raise RecipeError(f"{where}: with pretrained = 'train' the pretrained path must be <run>/checkpoints/step-N "
                              "(the stand-in's last step)")
    return StudyRecipe(
        source=Path(path), tables=raw,
        study=StudySettings(study["title"], study.get("seed", 0), study.get("device", "auto"), study.get("threads")),
        data=DataSettings(MiniSizes(**data["make_mini"]) if "make_mini" in data else None, data.get("ljspeech"),
                          data.get("hifitts"), data.get("split")),
        training=settings, corpus=corpus,
        features=tuple(ExtractorEntry(e["spec"], e["attributor"], e.get("random", False))
                       for e in tables["features"]["extractors"]),
        max_clip_seconds=float(tables["features"].get("max_seconds", MAX_CLIP_SECONDS)) or None,
        benchmark=BenchmarkSettings(benchmark.get("suite"), tuple(benchmark.get("protocols", ())),
                                    tuple(benchmark.get("seeds", (0, 1, 2)))),
        slurm=SlurmSettings(**tables["slurm"]))
