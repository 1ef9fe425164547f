"""Where a study's units run: here (`local`), or as Slurm jobs through submitit (`slurm`).

The Slurm backend submits one job per training run (with its GPU request) and one job array per
sharded stage (synthesis, features), waits for them, and fails the stage if any unit failed.
Preempted or timed-out jobs are requeued by submitit (`UnitTask.checkpoint`); since every unit
is resumable, a requeued unit continues where it stopped. Job logs go to `<workdir>/slurm/`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

from sourcetrace.core.errors import StageFailed, UsageError
from sourcetrace.core.offline import go_offline
from sourcetrace.pipeline.fetch import LOCK_FILE, FetchError, changed_since_fetch, recipe_artefacts
from sourcetrace.pipeline.study import Study, Unit, parse_stages


class LocalBackend:
    name = "local"
    sharded = False

    def run(self, study: Study, units: list[Unit], log: Callable[[str], None]) -> None:
        for unit in sorted(units, key=lambda u: u.wave):
            study.run_unit(unit, log)


class UnitTask:
    """What a Slurm job runs: one unit of a study, rebuilt from the recipe in the job's process.
    A submitit checkpointable callable: on preemption or timeout it is requeued as is."""

    def __init__(self, recipe: str, workdir: str, unit: Unit):
        self.recipe, self.workdir, self.unit = recipe, workdir, unit

    def __call__(self) -> str:
        go_offline()
        lines: list[str] = []

        def log(message: str) -> None:
            print(message, flush=True)
            lines.append(message)

        # Unless the recipe fixes [study] threads: as many as CPUs Slurm granted. torch would start
        # one per CPU of the node, and jobs sharing a node then oversubscribe it (seen: many times slower).
        Study(self.recipe, self.workdir).run_unit(self.unit, log, int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        return "\n".join(lines)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(UnitTask(self.recipe, self.workdir, self.unit))


class SlurmBackend:
    name = "slurm"
    sharded = True

    def __init__(self, folder: str | Path, partition: str | None = None, timeout_min: int = 60,
                 cpus_per_task: int = 1, mem_gb: float | None = None, extra: dict | None = None,
                 cpu_partition: str | None = None):
        self.folder, self.partition, self.timeout_min = Path(folder), partition, timeout_min
        self.cpu_partition = cpu_partition
        self.cpus_per_task, self.mem_gb, self.extra = cpus_per_task, mem_gb, extra or {}

    def job_parameters(self, gpus: int, name: str) -> dict:
        """What submitit's executor is given for a job (or each task of an array) asking `gpus` GPUs;
        `run --plan` prints these. A job asking no GPU (data, zero-init, bench, CPU shards) goes to
        `cpu_partition` where one is set: a GPU partition may refuse it, or hold a GPU node's slot idle."""
        params = {"timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task, "name": name,
                  "slurm_additional_parameters": {"requeue": True, **self.extra}}
        partition = self.partition if gpus else (self.cpu_partition or self.partition)
        if partition:
            params["slurm_partition"] = partition
        if gpus:
            params["gpus_per_node"] = gpus
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        return params

    def _executor(self, gpus: int, name: str):
        import submitit

        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster="slurm")
        executor.update_parameters(**self.job_parameters(gpus, name))
        return executor

    @staticmethod
    def submissions(units: list[Unit]) -> list[tuple[int, int, list[Unit]]]:
        """(wave, gpus, units) of each submission, in order: one job array per wave and GPU count;
        a wave is submitted once the one before it finished."""
        out = []
        for wave, members in groupby(sorted(units, key=lambda u: u.wave), key=lambda u: u.wave):
            for gpus, same in groupby(sorted(members, key=lambda u: u.gpus), key=lambda u: u.gpus):
                out.append((wave, gpus, list(same)))
        return out

    @staticmethod
    def job_name(stage: str) -> str:
        return f"sourcetrace-{stage}"

    def run(self, study: Study, units: list[Unit], log: Callable[[str], None]) -> None:
        failures: list[str] = []
        for wave, group in groupby(self.submissions(units), key=lambda submission: submission[0]):
            jobs = []
            for _, gpus, same in group:
                executor = self._executor(gpus, self.job_name(same[0].stage))
                tasks = [UnitTask(str(study.recipe_path), str(study.workdir), u) for u in same]
                with executor.batch():  # one job array for the group
                    submitted = [executor.submit(task) for task in tasks]
                jobs.extend(zip(same, submitted))
                log(f"[slurm] {same[0].stage} wave {wave}: submitted {len(same)} job(s) "
                    f"({', '.join(j.job_id for j in submitted[:4])}{' ...' if len(submitted) > 4 else ''}), gpus={gpus}")
            for unit, job in jobs:
                try:
                    output = job.result()
                    log(f"[slurm] {unit.stage} {unit.name} (job {job.job_id}): done"
                        + (f"\n  {output.splitlines()[-1]}" if output else ""))
                except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's failure
                    failures.append(f"{unit.stage} {unit.name} (job {job.job_id}): {exc}")
            if failures:
                break
        if failures:
            raise StageFailed("Slurm unit(s) failed:\n  " + "\n  ".join(failures))


BACKENDS = ("local", "slurm")


def make_backend(kind: str, study: Study):
    """The backend named `kind`: local, or slurm configured from the recipe's [slurm] table."""
    if kind == "slurm":
        cfg = study.recipe.slurm
        return SlurmBackend(study.path("slurm"), partition=cfg.partition, timeout_min=cfg.timeout_min,
                            cpus_per_task=cfg.cpus_per_task, mem_gb=cfg.mem_gb, cpu_partition=cfg.cpu_partition)
    if kind == "local":
        return LocalBackend()
    raise UsageError(f"--backend {kind!r}: expected one of {', '.join(BACKENDS)}")


def run_study(recipe: str | Path, workdir: str | Path | None = None, backend: str = "local",
              stages: str | None = None, log: Callable[[str], None] = print) -> Study:
    """`sourcetrace run`: the study of `recipe` in `workdir`, its stages (comma-separated; default
    all) that are not up to date, on the named backend. Returns the study."""
    study = Study(recipe, workdir)
    changed = changed_since_fetch(recipe_artefacts(study.recipe, study.workdir), study.workdir, rehash=True)
    if changed:
        raise FetchError(f"{study.workdir / LOCK_FILE}: {len(changed)} fetched input(s) differ from what fetch "
                         f"pinned: {'; '.join(f'{name}: {problem}' for name, problem in changed.items())}: move "
                         "each away and rerun `sourcetrace fetch` on the recipe")
    study.run(make_backend(backend, study), parse_stages(stages), log)
    return study
