"""`sourcetrace run RECIPE`: a whole study, from an empty folder to a leaderboard, stage by stage.

Stages: data (datasets and the prompt set) -> train (zero-init, scheduled, pretrained stand-in,
fine-tune, per architecture) -> synth (the recipe's corpus) -> features (per extractor) -> bench
(every protocol of the suite, figures, leaderboard site). Each stage is resumable on its own
(training resume points, synthesis journals, feature shards, result identities) and, once finished,
stamps `stages/<stage>.json` with an identity over its recipe sections, its upstream stamps and the
sourcetrace version: a rerun whose identities match does nothing and says so.

A stage is a list of units (one training run, one synthesis or feature shard); a backend runs the
units: `local` in this process, `slurm` as Slurm jobs through submitit (see `backends.py`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sourcetrace
from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import load_protocols
from sourcetrace.checkpoints.registry import load_schedule
from sourcetrace.core.device import pin_threads
from sourcetrace.core.errors import StageFailed, UsageError
from sourcetrace.core.fileio import outside_note, write_json_atomic
from sourcetrace.core.naming import step_of
from sourcetrace.corpus import Corpus
from sourcetrace.datasets.espeak_datasets import make_hifitts_like, make_ljspeech_like
from sourcetrace.datasets.ljspeech import LJSpeech, standard_split
from sourcetrace.datasets.prompts import write_prompts
from sourcetrace.pipeline.recipe import ROLES, CorpusRecipe, Shard, StudyRecipe, load_study_recipe
from sourcetrace.pipeline.regenerate import regenerate
from sourcetrace.pipeline.training_runs import finetune_subset, ljspeech_train_split, save_zero_inits, train_run

STAGES = ("data", "train", "synth", "features", "bench")
_SECTIONS = {  # the recipe tables a stage's output depends on (besides its upstream stages)
    "data": ("data", "corpus"), "train": ("training", "corpus"), "synth": ("corpus",),
    "features": ("features",), "bench": ("benchmark", "features", "study"),
}


def parse_stages(text: str | None) -> tuple[str, ...]:
    """The stages of a comma-separated list ("train,synth"), in the order given; None: all of them."""
    stages = tuple(text.split(",")) if text else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    return stages


@dataclass(frozen=True)
class TrainingRun:
    """One training unit of a study: an architecture's zero-init models, its scheduled run, its
    pretrained stand-in, or its fine-tune on one speaker. `str()` is the unit's name,
    "vits/scheduled" or "vits/finetuned/9136", what logs and job names show."""

    architecture: str
    role: str
    speaker: str | None = None  # fine-tunes only

    def __post_init__(self):
        if self.role not in ROLES or (self.speaker is not None) != (self.role == "finetuned"):
            raise UsageError(f"training run {self.architecture}/{self.role}/{self.speaker}: expected "
                             f"ARCHITECTURE/ROLE with ROLE one of {', '.join(ROLES)}, or "
                             "ARCHITECTURE/finetuned/SPEAKER")

    @classmethod
    def parse(cls, text: str) -> TrainingRun:
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise UsageError(f"training run {text!r}: expected ARCHITECTURE/ROLE or ARCHITECTURE/finetuned/SPEAKER")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join([self.architecture, self.role] + ([self.speaker] if self.speaker is not None else []))


@dataclass(frozen=True)
class Unit:
    stage: str
    name: str
    wave: int = 0    # units of a later wave start after the earlier waves finished (fine-tunes)
    gpus: int = 0    # what one unit asks of a cluster


class Study:
    """A recipe in a work folder. `classes=False` reads the recipe without the vocoder classes (no
    torch): enough to plan the study (`plan.py`), not to run it."""

    def __init__(self, recipe_path: str | Path, workdir: str | Path | None = None, classes: bool = True):
        self.recipe_path = Path(recipe_path).resolve()
        self.workdir = Path(workdir or Path.cwd()).resolve()
        self.recipe: StudyRecipe = load_study_recipe(self.recipe_path, base=self.workdir, classes=classes)
        self.corpus_recipe: CorpusRecipe = self.recipe.corpus
        self.title = self.recipe.study.title

    # ---- paths --------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.workdir / rel

    @property
    def corpus_dir(self) -> Path:
        return self.path("corpus")

    def _stamp(self, stage: str) -> Path:
        return self.path(f"stages/{stage}.json")

    # ---- identities ---------------------------------------------------------------------------
    def identity(self, stage: str) -> str:
        upstream = STAGES[: STAGES.index(stage)]
        stamps = {s: self._read_stamp(s) for s in upstream}
        payload = {"stage": stage, "sections": {k: self.recipe.tables.get(k) for k in _SECTIONS[stage]},
                   "upstream": stamps, "sourcetrace": sourcetrace.__version__}
        if stage == "bench":  # the protocol files' contents, not only the names the recipe gives
            payload["protocols"] = [p.sha256 for p in self.protocols()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _read_stamp(self, stage: str) -> str | None:
        try:
            return json.loads(self._stamp(stage).read_text())["identity"]
        except (OSError, ValueError, KeyError):
            return None

    def up_to_date(self, stage: str) -> bool:
        return self._read_stamp(stage) == self.identity(stage)

    # ---- units --------------------------------------------------------------------------------
    def units(self, stage: str, sharded: bool = False) -> list[Unit]:
        """The units of a stage; synthesis and features split into [slurm] *_shards when `sharded`."""
        slurm = self.recipe.slurm
        if stage == "train":
            gpus = slurm.gpus_per_training
            units = []
            for name, arch in sorted(self.corpus_recipe.architectures.items()):
                if "zero-init" in arch.roles:
                    units.append(Unit(stage, str(TrainingRun(name, "zero-init"))))
                if "scheduled" in arch.roles:
                    units.append(Unit(stage, str(TrainingRun(name, "scheduled")), gpus=gpus))
                if self.recipe.training.pretrained == "train" and arch.pretrained is not None:
                    units.append(Unit(stage, str(TrainingRun(name, "pretrained")), gpus=gpus))
                if "finetuned" in arch.roles and arch.finetuned is not None:
                    units.extend(Unit(stage, str(TrainingRun(name, "finetuned", speaker)), wave=1, gpus=gpus)
                                 for speaker in self.corpus_recipe.finetune_speakers)
            return units
        if stage in ("synth", "features"):
            shards = getattr(slurm, f"{stage}_shards") if sharded else 1
            return [Unit(stage, str(Shard(k, shards)), gpus=getattr(slurm, f"gpus_per_{stage}")) for k in range(shards)]
        return [Unit(stage, stage)]

    def run_unit(self, unit: Unit, log: Callable[[str], None] = print, default_threads: int | None = None) -> None:
        """Run one unit from its own inputs, whatever ran before it in this process: the CPU thread
        count is set here ([study] threads, else the backend's grant, else torch's default for this
        machine, never one left by an earlier unit); training sets seeds, RNG states and kernel flags."""
        pin_threads(self.recipe.study.threads or default_threads)
        runners = {"data": self._run_data, "train": self._run_train, "synth": self._run_synth,
                   "features": self._run_features, "bench": self._run_bench}
        runners[unit.stage](unit.name, log)

    # ---- stages -------------------------------------------------------------------------------
    def _run_data(self, _name: str, log) -> None:
        data = self.recipe.data
        if data.make_mini is not None:
            sizes = data.make_mini
            lj = make_ljspeech_like(self.ljspeech_dir, sizes.train, sizes.val, sizes.test, seed=self.recipe.study.seed)
            for speaker in self.corpus_recipe.finetune_speakers:
                make_hifitts_like(self.hifitts_dir, sizes.hifitts, speaker=speaker)
        else:
            lj = LJSpeech(self.ljspeech_dir, split=standard_split(self.path(data.split)) if data.split else None,
                          check_audio=False)
        prompts = lj.prompts()
        write_prompts(self.corpus_recipe.prompts, prompts)
        log(f"[data] {len(lj.items('train'))} training clips, {len(prompts)} prompts -> {self.corpus_recipe.prompts}"
            + outside_note(self.corpus_recipe.prompts, self.workdir))

    @property
    def ljspeech_dir(self) -> Path:
        return self.path(self.recipe.data.ljspeech or "data/LJSpeech-mini")

    @property
    def hifitts_dir(self) -> Path:
        return self.path(self.recipe.data.hifitts or "data/hifitts-mini")

    def _training_data(self, generator, speaker: str | None):
        from sourcetrace.generators.data import TrainingData

        schedule = load_schedule(self.corpus_recipe.schedule)
        if speaker is not None:  # a fine-tune
            utterances = finetune_subset(self.hifitts_dir, speaker, schedule.finetune_clips)
            cache = self.path("runs/features/hifitts")
        else:
            utterances, cache = ljspeech_train_split(self.ljspeech_dir), self.path("runs/features/ljspeech")
        return TrainingData(generator, utterances, cache_dir=cache, progress=True)

    def _run_train(self, name: str, log) -> None:
        run = TrainingRun.parse(name)
        arch_name, kind, speaker = run.architecture, run.role, run.speaker
        arch = self.corpus_recipe.architectures[arch_name]
        schedule = load_schedule(self.corpus_recipe.schedule)
        if kind == "zero-init":
            save_zero_inits(arch_name, self.recipe.training.config, schedule.zero_init_seeds, arch.runs)
            log(f"[train] {name}: {len(schedule.zero_init_seeds)} zero-init models in {arch.runs / 'checkpoints'}"
                + outside_note(arch.runs, self.workdir))
            return
        training = self.recipe.training
        seed, init_from, final_name = self.recipe.study.seed, None, None
        if kind == "finetuned":
            finetuned = arch.finetuned_for(speaker)
            init_from, final_name = arch.pretrained, finetuned.name
            run_dir, steps = finetuned.parent.parent, [schedule.finetune_steps]
        elif kind == "pretrained":
            seed = training.pretrained_seed
            run_dir, steps = arch.pretrained.parent.parent, [step_of(arch.pretrained.name)]
        else:
            run_dir, steps = arch.runs, list(schedule.steps)
        report = train_run(arch_name, training.config, run_dir,
                           lambda generator: self._training_data(generator, speaker if kind == "finetuned" else None),
                           steps=steps, seed=seed, batch_size=training.batch_size or schedule.batch_size,
                           device=self.recipe.study.device, init_from=init_from, trust=arch.trust,
                           final_name=final_name, tensorboard=training.tensorboard,
                           deterministic=training.deterministic, log=log)
        log(f"[train] {name}: {report.steps_run} steps ({report.seconds_per_step:.3f} s/step) -> {run_dir / 'checkpoints'}"
            + outside_note(run_dir, self.workdir))

    def _run_synth(self, name: str, log) -> None:
        report = regenerate(self.corpus_recipe, self.corpus_dir, shard=Shard.parse(name), device=self.recipe.study.device,
                            log=log)
        log(f"[synth] shard {name}: {report.made} clips made, {report.skipped} already there")
        if report.failed:
            raise StageFailed(f"{len(report.failed)} synthesis job(s) failed: " + "; ".join(report.failed[:3]))

    def extractor_specs(self) -> list[tuple[str, str]]:
        """(extractor spec, attributor spec) per [features] entry; a `random = true` SSL entry is a
        model built from its named config with the study's seed (miniature studies)."""
        from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

        systems = []
        for entry in self.recipe.features:
            spec = entry.spec
            if entry.random:
                model, _, layer = spec.partition("@")
                named = named_model_spec(model)
                folder = save_random_model(named["config"], named["preprocessor"], self.path(f"models/{model}"),
                                           seed=self.recipe.study.seed)
                spec = f"ssl:{folder}@{layer}"
            systems.append((spec, entry.attributor))
        return systems

    def _run_features(self, name: str, log) -> None:
        from sourcetrace.attribution.extractors import build_extractor
        from sourcetrace.attribution.store import FeatureStore

        shard = Shard.parse(name)
        corpus = Corpus.read(self.corpus_dir)
        for spec, _ in self.extractor_specs():
            store = FeatureStore(corpus, build_extractor(spec, device=self.recipe.study.device),
                                 max_seconds=self.recipe.max_clip_seconds)
            report = store.compute(part=(shard.index, shard.count))
            log(f"[features] {store.extractor.name} part {name}: {report.computed} computed, {report.reused} reused, "
                f"{len(report.rejects)} rejected")

    def protocols(self) -> list:
        """The protocols of [benchmark]: its suite's, or those it lists."""
        settings = self.recipe.benchmark
        return load_protocols(settings.suite, settings.protocols)

    def _run_bench(self, _name: str, log) -> None:
        from sourcetrace.benchmark.bench import run_bench

        failures = run_bench(self.corpus_dir, self.protocols(), self.extractor_specs(),
                             self.path("results"), seeds=list(self.recipe.benchmark.seeds), device=self.recipe.study.device,
                             log=log, command=f"sourcetrace run {self.recipe_path.name}",
                             max_seconds=self.recipe.max_clip_seconds)
        page = build_leaderboard(sorted(self.path("results").glob("*.json")), self.path("site"), title=self.title)
        log(f"[bench] leaderboard: {page}; figures: {self.path('results/figures')}")
        if failures:
            raise StageFailed(f"{failures} benchmark failure(s); see the log above")

    # ---- driving ------------------------------------------------------------------------------
    def run(self, backend, stages: tuple[str, ...] = STAGES, log: Callable[[str], None] = print) -> list[str]:
        """Run the stages that are not up to date; returns the stages that ran."""
        ran = []
        for stage in stages:
            if self.up_to_date(stage):
                log(f"[run] {stage}: up to date, nothing to do")
                continue
            t0 = time.perf_counter()
            log(f"[run] {stage}: running ({backend.name})")
            backend.run(self, self.units(stage, sharded=backend.sharded), log)
            write_json_atomic(self._stamp(stage), {"identity": self.identity(stage), "seconds": time.perf_counter() - t0,
                                                   "backend": backend.name})
            log(f"[run] {stage}: done in {time.perf_counter() - t0:.0f} s")
            ran.append(stage)
        if not ran:
            log("[run] everything is up to date: nothing to do")
        return ran
