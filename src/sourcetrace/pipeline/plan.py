"""`sourcetrace run RECIPE --plan`: what a run would do, before it spends a GPU-hour.

For every stage and unit: done (its stage's stamp matches, or a training run's checkpoints are all
there and whole), pending (it would run), or blocked (an input the recipe names is missing, or an
earlier stage is blocked: `run` stops at the first stage that fails). Per stage the estimated
device-hours on the recipe's device and the disk its units still to run (pending and blocked) write,
from the cost table (`costs.py`); with the Slurm backend the jobs and job arrays
`backends.SlurmBackend` would submit, with their parameters taken from the backend itself. Nothing
runs, nothing is submitted, and no model stack is imported: the recipe gets the checks `run` makes
(the architectures' traits come from core.plugins, not their classes).

Missing inputs come from one function, `missing_inputs`: the `sourcetrace fetch` catalogue's artefacts
the recipe needs that are not in place (by the names `fetch` takes) or whose length differs from what
fetch.lock pinned (`fetch.changed_since_fetch`; no hashing here, `run` checks the sha256), and any
other file or folder a unit reads that no stage makes and that is not there (by its recipe key: put
in place by hand).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sourcetrace.checkpoints.registry import load_schedule
from sourcetrace.core.naming import STORED_VOICE, checkpoint_complete, step_name, step_of, zero_init_name
from sourcetrace.core.offline import extractor_model
from sourcetrace.datasets.ljspeech import standard_split
from sourcetrace.datasets.prompts import read_prompts
from sourcetrace.pipeline.backends import SlurmBackend, make_backend
from sourcetrace.pipeline.costs import Cost, CostTable
from sourcetrace.pipeline.fetch import changed_since_fetch, recipe_artefacts
from sourcetrace.pipeline.recipe import Shard, expand
from sourcetrace.pipeline.study import STAGES, Study, TrainingRun, Unit, parse_stages

#: `run --plan` exits with this when a unit is blocked or an input is missing (0 when every unit can run).
EXIT_BLOCKED = 3


@dataclass(frozen=True)
class RecipeInput:
    """A file or folder the recipe names that no stage makes: it must be put in place (`fetch`)."""

    key: str    # the recipe key naming it, e.g. "[data] ljspeech"
    path: Path


@dataclass(frozen=True)
class Missing:
    """A missing input: `name` is its fetch catalogue name (`fetchable`: `sourcetrace fetch` gets it), else
    the recipe key naming it (it must be put in place by hand); `size` its bytes where known; `problem`
    what is wrong with the copy in place (one that is not what fetch pinned)."""

    name: str
    path: Path
    size: int | None = None
    problem: str = ""
    fetchable: bool = False
    by_hand: str = ""  # a catalogue artefact with no file URL: how to get it (fetch takes it only from a lab mirror)


def unit_inputs(study: Study, unit: Unit) -> list[RecipeInput]:
    """The inputs one unit reads that the study does not make."""
    recipe, corpus = study.recipe, study.corpus_recipe
    real_data = recipe.data.make_mini is None
    ljspeech = [RecipeInput("[data] ljspeech", study.ljspeech_dir)] if real_data else []
    hifitts = [RecipeInput("[data] hifitts", study.hifitts_dir)] if real_data else []
    official = recipe.training.pretrained == "official"
    if unit.stage == "data":
        split = [RecipeInput("[data] split", study.path(recipe.data.split))] if recipe.data.split else []
        return ljspeech + hifitts + split
    if unit.stage == "train":
        run = TrainingRun.parse(unit.name)
        if run.role == "finetuned":
            arch = corpus.architectures[run.architecture]
            if not official or arch.pretrained is None:
                return hifitts
            return [*hifitts, RecipeInput(f"[corpus.architectures.{arch.name}] pretrained", arch.pretrained)]
        return [] if run.role == "zero-init" else ljspeech
    if unit.stage == "synth":
        found: dict[Path, RecipeInput] = {}
        for job in Shard.parse(unit.name).take(expand(corpus)):
            where = f"[corpus.architectures.{job.architecture}]"
            if job.role == "pretrained" and official:
                found.setdefault(job.checkpoint_path, RecipeInput(f"{where} pretrained", job.checkpoint_path))
            for reference in job.references:
                if not reference.name.startswith(STORED_VOICE):  # a clip, not a voice the checkpoint stores
                    found.setdefault(Path(reference.voice), RecipeInput(f"{where} references", Path(reference.voice)))
            vocoder = corpus.vocoders.get(job.vocoder) if job.vocoder else None
            if vocoder is not None and vocoder.weights is not None:
                found.setdefault(vocoder.weights, RecipeInput(f"[corpus.vocoders.{vocoder.name}] weights", vocoder.weights))
            if vocoder is not None and vocoder.config is not None and Path(vocoder.config).is_absolute():
                found.setdefault(Path(vocoder.config),
                                 RecipeInput(f"[corpus.vocoders.{vocoder.name}] config", Path(vocoder.config)))
        return list(found.values())
    if unit.stage in ("features", "bench"):  # bench extracts what the feature store lacks: the same models
        return [RecipeInput(f"[features] extractors {entry.spec}", model.folder) for entry in recipe.features
                if not entry.random and (model := extractor_model(entry.spec)) is not None]
    return []


def missing_inputs(study: Study) -> list[Missing]:
    """Every input the recipe needs that is not in place: the artefacts `sourcetrace fetch` gets, by
    their catalogue names, then any other path a unit reads (one the catalogue does not know, e.g. a
    file of the lab's own) by its recipe key."""
    seen: dict[Path, Missing] = {}
    artefacts = recipe_artefacts(study.recipe, study.workdir)
    changed = changed_since_fetch(artefacts, study.workdir, rehash=False)
    for artefact in artefacts:
        if not artefact.present(study.workdir) or artefact.name in changed:
            path = artefact.destination(study.workdir)
            seen[path] = Missing(artefact.name, path, artefact.size, changed.get(artefact.name, ""),
                                 fetchable=bool(artefact.urls), by_hand="" if artefact.urls else artefact.note)
    for stage in STAGES:
        for unit in study.units(stage):
            for item in unit_inputs(study, unit):
                if not item.path.exists() and not any(_covers(path, item.path) for path in seen):
                    seen[item.path] = Missing(item.key, item.path)
    return list(seen.values())


def _covers(missing: Path, needed: Path) -> bool:
    """A missing artefact blocks a unit when it is the input, holds it, or lies inside it."""
    return missing == needed or missing in needed.parents or needed in missing.parents


@dataclass
class Estimate:
    """Device-hours and bytes written, or what the cost table lacks for them."""

    device_hours: float | None = 0.0
    disk_bytes: int | None = 0
    costs: list[str] = field(default_factory=list)    # the cost-table rows used
    lacking: list[str] = field(default_factory=list)  # rows the table does not have: no estimate
    waits_for: list[str] = field(default_factory=list)  # inputs not in place that the estimate is computed from

    def add(self, hours: float | None, disk: int | None) -> None:
        self.device_hours = None if hours is None or self.device_hours is None else self.device_hours + hours
        self.disk_bytes = None if disk is None or self.disk_bytes is None else self.disk_bytes + disk


class _Costing:
    """The cost table applied to one study: device-seconds and bytes of each unit."""

    def __init__(self, study: Study, table: CostTable):
        self.study, self.table = study, table
        self.recipe = study.recipe
        self.schedule = load_schedule(study.corpus_recipe.schedule)
        self.device_class = table.device_class(self.recipe.study.device)

    def _row(self, estimate: Estimate, *path: str | None) -> Cost | None:
        """The cost at `path` (a None part: the recipe's device has no class), noted as used or lacking."""
        parts = [p for p in path if p is not None]
        found = self.table.cost(*parts) if len(parts) == len(path) else None
        key = ".".join(p or "?" for p in path)
        (estimate.costs if found else estimate.lacking).append(key)
        return found

    def seconds_per_clip(self, estimate: Estimate) -> float | None:
        data = "make_mini" if self.recipe.data.make_mini is not None else "ljspeech"
        found = self._row(estimate, "audio", "seconds_per_clip", data)
        return found.value if found else None

    def prompts(self, estimate: Estimate) -> int | None:
        """The prompt count: the prompts file once the data stage wrote it, else what it will hold; None
        while the recipe's split file is not in place (a missing input: no estimate, noted on `estimate`)."""
        prompts = self.study.corpus_recipe.prompts
        if prompts.is_file():
            return len(read_prompts(prompts))
        sizes = self.recipe.data.make_mini
        if sizes is not None:
            return sizes.val + sizes.test
        split_file = self.study.path(self.recipe.data.split) if self.recipe.data.split else None
        if split_file is not None and not split_file.is_file():
            estimate.waits_for.append(f"[data] split ({split_file})")
            return None
        return sum(1 for part in standard_split(split_file).values() if part in ("val", "test"))

    def train(self, unit: Unit) -> Estimate:
        estimate = Estimate()
        run = TrainingRun.parse(unit.name)
        config = self.recipe.training.config
        arch = self.study.corpus_recipe.architectures[run.architecture]
        checkpoint = self._row(estimate, "checkpoint", config, run.architecture)
        if run.role == "zero-init":  # built, not trained: seconds on the CPU
            estimate.add(0.0, int(checkpoint.value) * len(self.schedule.zero_init_seeds) if checkpoint else None)
            return estimate
        steps, kept = {"scheduled": (max(self.schedule.steps), len(self.schedule.steps)),
                       "pretrained": (step_of(arch.pretrained.name) or 0, 1) if arch.pretrained else (0, 0),
                       "finetuned": (self.schedule.finetune_steps, 1)}[run.role]
        step = self._row(estimate, "train", self.device_class, config, run.architecture)
        batch = self.recipe.training.batch_size or self.schedule.batch_size
        if step is not None and step.batch != batch:
            estimate.lacking.append(f"{step.key} at batch {batch} (the table's is for batch {step.batch})")
            step = None
        estimate.add(steps * step.value / 3600 if step else None, int(checkpoint.value) * kept if checkpoint else None)
        return estimate

    def synth(self, unit: Unit) -> Estimate:
        estimate = Estimate()
        seconds = self.seconds_per_clip(estimate)
        rate = self._row(estimate, "audio", "bytes_per_second", "wav")
        prompts = self.prompts(estimate)
        for job in Shard.parse(unit.name).take(expand(self.study.corpus_recipe)):
            rtf = self._row(estimate, "synth", self.device_class, self.recipe.training.config, job.architecture)
            audio = prompts * seconds if seconds is not None and prompts is not None else None
            estimate.add(audio * rtf.value / 3600 if audio is not None and rtf else None,
                         int(audio * rate.value) if audio is not None and rate else None)
        estimate.costs, estimate.lacking = sorted(set(estimate.costs)), sorted(set(estimate.lacking))
        estimate.waits_for = sorted(set(estimate.waits_for))
        return estimate

    def clips(self, estimate: Estimate) -> int | None:
        prompts = self.prompts(estimate)
        return None if prompts is None else len(expand(self.study.corpus_recipe)) * prompts

    def features(self, unit: Unit) -> Estimate:
        estimate = Estimate()
        seconds = self.seconds_per_clip(estimate)
        every = self.clips(estimate)
        clips = None if every is None else len(Shard.parse(unit.name).take(list(range(every))))
        for entry in self.recipe.features:
            model = found.name if (found := extractor_model(entry.spec)) else entry.spec
            speed = self._row(estimate, "features", self.device_class, model)
            size = self._row(estimate, "features", "bytes_per_clip", model)
            estimate.add(clips * seconds / speed.value / 3600 if clips is not None and speed and seconds is not None
                         else None, clips * int(size.value) if clips is not None and size else None)
        return estimate

    def unit(self, unit: Unit) -> Estimate:
        if unit.stage in ("train", "synth", "features"):
            return getattr(self, unit.stage)(unit)
        return Estimate()  # data and bench run on the CPU and write little (prompts, results, the site)


@dataclass
class UnitPlan:
    name: str
    state: str                     # done | pending | blocked
    lacks: list[Missing]           # missing inputs this unit reads
    after: str | None              # the earlier blocked stage that blocks it
    estimate: Estimate


@dataclass
class SlurmSubmission:
    wave: int
    tasks: int                     # units in the job array (1: one job)
    parameters: dict               # what submitit's executor is given (SlurmBackend.job_parameters)


@dataclass
class StagePlan:
    name: str
    up_to_date: bool
    units: list[UnitPlan]
    estimate: Estimate             # of the units still to run (pending and blocked): what is left to spend
    submissions: list[SlurmSubmission]

    @property
    def blocked(self) -> bool:
        return any(u.state == "blocked" for u in self.units)


@dataclass
class Plan:
    recipe: Path
    workdir: Path
    backend: str
    device: str
    device_class: str | None
    stages: list[StagePlan]
    missing: list[Missing]

    @property
    def fetch_command(self) -> str:
        return f"sourcetrace fetch {shlex.quote(str(self.recipe))} --workdir {shlex.quote(str(self.workdir))}"

    @property
    def fetchable(self) -> list[Missing]:
        return [m for m in self.missing if m.fetchable]

    @property
    def exit_code(self) -> int:
        """Non-zero while anything is missing, even an input no unit of the plan names (a file the fetch
        registry knows a unit reads beside the one the recipe names)."""
        return EXIT_BLOCKED if self.missing or any(s.blocked for s in self.stages) else 0

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(recipe=str(self.recipe), workdir=str(self.workdir), exit_code=self.exit_code,
                    fetch_command=self.fetch_command if self.fetchable else None)
        return _jsonable(data)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _training_done(study: Study, unit: Unit) -> bool:
    """A training unit whose checkpoints are all there and whole (`core.naming.checkpoint_complete`): the run
    would train no step."""
    run = TrainingRun.parse(unit.name)
    arch = study.corpus_recipe.architectures[run.architecture]
    schedule = load_schedule(study.corpus_recipe.schedule)
    if run.role == "finetuned":
        wanted = [arch.finetuned_for(run.speaker or "")]
    elif run.role == "pretrained":
        wanted = [arch.pretrained] if arch.pretrained else []
    else:
        names = ([zero_init_name(s) for s in schedule.zero_init_seeds] if run.role == "zero-init"
                 else [step_name(s) for s in schedule.steps])
        wanted = [arch.runs / "checkpoints" / n for n in names] if arch.runs else []
    return bool(wanted) and all(path is not None and checkpoint_complete(path) for path in wanted)


def plan_study(recipe: str | Path, workdir: str | Path | None = None, backend: str = "local",
               stages: str | None = None, table: CostTable | None = None) -> Plan:
    """The plan of `sourcetrace run RECIPE` in `workdir` on `backend`: see the module docstring."""
    study = Study(recipe, workdir, classes=False)
    runner = make_backend(backend, study)
    costing = _Costing(study, table or CostTable.shipped())
    missing = missing_inputs(study)
    plans: list[StagePlan] = []
    blocked_stage: str | None = None
    chosen = parse_stages(stages)
    for stage in chosen:
        skipped = [s for s in STAGES[: STAGES.index(stage)] if s not in chosen and not study.up_to_date(s)]
        if skipped and blocked_stage is None:  # what this stage reads would not be there
            blocked_stage = skipped[-1]
        up_to_date = study.up_to_date(stage)
        units = study.units(stage, sharded=runner.sharded)
        unit_plans = []
        for unit in units:
            lacks = [m for m in missing if any(_covers(m.path, i.path) for i in unit_inputs(study, unit))]
            if up_to_date or (stage == "train" and _training_done(study, unit)):
                state = "done"
            else:
                state = "blocked" if lacks or blocked_stage else "pending"
            unit_plans.append(UnitPlan(unit.name, state, lacks, blocked_stage if state == "blocked" and not lacks
                                       else None, costing.unit(unit)))
        total = Estimate()
        for unit_plan in (u for u in unit_plans if u.state != "done"):  # what is left: a done unit costs nothing
            total.add(unit_plan.estimate.device_hours, unit_plan.estimate.disk_bytes)
            total.costs += [c for c in unit_plan.estimate.costs if c not in total.costs]
            total.lacking += [c for c in unit_plan.estimate.lacking if c not in total.lacking]
            total.waits_for += [c for c in unit_plan.estimate.waits_for if c not in total.waits_for]
        submissions = [] if up_to_date or not isinstance(runner, SlurmBackend) else [
            SlurmSubmission(wave, len(same), runner.job_parameters(gpus, runner.job_name(stage)))
            for wave, gpus, same in runner.submissions(units)]
        plan = StagePlan(stage, up_to_date, unit_plans, total, submissions)
        plans.append(plan)
        if plan.blocked and blocked_stage is None:
            blocked_stage = stage
    return Plan(study.recipe_path, study.workdir, backend, study.recipe.study.device, costing.device_class, plans,
                missing)


def _hours(value: float | None) -> str:
    return "no estimate" if value is None else f"{value:,.1f} device-hours"


def _duration(hours: float) -> str:
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:,.0f} min" if hours * 60 >= 1 else "<1 min"


def _bytes(value: int | None) -> str:
    if value is None:
        return "no estimate"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value} B"


def plan_lines(plan: Plan, table: CostTable | None = None) -> list[str]:
    """The plan as the lines `run --plan` prints."""
    table = table or CostTable.shipped()
    device = table.classes.get(plan.device_class or "", "no class in the cost table")
    lines = [f"[plan] {plan.recipe} in {plan.workdir}, backend {plan.backend}, device {plan.device} "
             f"(costs of {device})"]
    chosen = {stage.name for stage in plan.stages}
    for stage in plan.stages:
        counts = {s: sum(1 for u in stage.units if u.state == s) for s in ("done", "pending", "blocked")}
        lines.append(f"[plan] {stage.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                     + f"; remaining {_hours(stage.estimate.device_hours)}, writes {_bytes(stage.estimate.disk_bytes)}"
                     + (" (up to date)" if stage.up_to_date else ""))
        if stage.estimate.lacking:
            lines.append("    no estimate: the cost table lacks " + ", ".join(stage.estimate.lacking))
        if stage.estimate.waits_for:
            lines.append("    no estimate until in place: " + ", ".join(stage.estimate.waits_for))
        for unit in stage.units:
            why = ("needs " + ", ".join(f"{m.name} ({m.path})" for m in unit.lacks) if unit.lacks
                   else f"after {unit.after}, which is " + ("blocked" if unit.after in chosen else
                                                             "not up to date and not among --stages")
                   if unit.after else "")
            cost = f"  {_duration(unit.estimate.device_hours)}" if unit.estimate.device_hours else ""
            lines.append(f"    {unit.name:<28} {unit.state}{cost}" + (f": {why}" if why else ""))
        for job in stage.submissions:
            p = job.parameters
            lines.append(f"    slurm wave {job.wave}: " + (f"job array of {job.tasks} tasks" if job.tasks > 1 else "1 job")
                         + f" {p['name']}: partition {p.get('slurm_partition', '(default)')}, "
                         f"{p.get('gpus_per_node', 0)} GPU(s), {p['cpus_per_task']} CPU(s), "
                         f"{p['timeout_min']} min" + (f", {p['mem_gb']} GB" if "mem_gb" in p else "")
                         + ", requeued on preemption")
    hours = [s.estimate.device_hours for s in plan.stages]
    disk = [s.estimate.disk_bytes for s in plan.stages]
    lines.append(f"[plan] total remaining: {_hours(None if None in hours else sum(h or 0.0 for h in hours))}, "
                 f"writes {_bytes(None if None in disk else sum(d or 0 for d in disk))}")
    if plan.missing:
        lines.append(f"[plan] {len(plan.missing)} input(s) missing:")
        lines += [f"    {m.name}: {m.path}" + (f" ({_bytes(m.size)})" if m.size else "")
                  + (f": {m.problem}: move it away and fetch it again" if m.problem else "")
                  + ("" if m.fetchable else f": {m.by_hand}, or fetch it from a lab mirror (--mirror)" if m.by_hand
                     else ": not in the fetch catalogue, put it in place by hand")
                  for m in plan.missing]
        if plan.fetchable:
            lines.append(f"[plan] get the catalogue's with: {plan.fetch_command}" if len(plan.fetchable) < len(plan.missing)
                         else f"[plan] get them with: {plan.fetch_command}")
    if plan.exit_code:
        lines.append(f"[plan] blocked: a run would stop at the first blocked stage (exit {plan.exit_code})")
    elif all(u.state == "done" for stage in plan.stages for u in stage.units):
        lines.append("[plan] every unit is done: a run has nothing to do")
    else:
        lines.append("[plan] every unit can run")
    return lines
