"""Generate a recipe's corpus, resumably and in shards, and check a corpus against its recipe.

Each job (one checkpoint with one vocoder) keeps a journal, `parts/<job>.jsonl`: one complete JSON
row per finished clip, appended and fsynced after the clip's WAV was renamed into place. A killed
run loses only the clip in flight (a torn last journal line is ignored); a rerun skips every clip
in a journal whose audio is present. Shards (`shard=Shard(k, n)`) take every n-th job, so a job array
can split the work; whichever process finds every job complete writes `manifest.csv`, in recipe
order, so the manifest does not depend on sharding, order of completion or interruptions.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import sourcetrace
from sourcetrace.checkpoints.registry import official_path
from sourcetrace.core.device import resolve_device
from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.core.naming import CHECKPOINT_WEIGHTS, clip_location, journal_name, prompt_seed
from sourcetrace.corpus.columns import ClipRecord, columns_of, spell
from sourcetrace.corpus.journal import PARTS, append_journal, read_journal
from sourcetrace.corpus.manifest import MANIFEST, Corpus, audio_facts, records
from sourcetrace.datasets.prompts import read_prompts
from sourcetrace.pipeline.recipe import CorpusRecipe, Job, Shard, expand


@dataclass
class RegenerateReport:
    jobs: int
    made: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    manifest_written: bool = False


def _journal_path(out: Path, job: Job) -> Path:
    return out / PARTS / journal_name(job.label, job.vocoder or "", job.swapped)


def _done_clips(out: Path, job: Job) -> set[str]:
    """The clip ids of the job's journal whose audio is in place."""
    return {c for c, r in read_journal(_journal_path(out, job)).items() if (out / r["path"]).is_file()}


def _job_lock(out: Path, job: Job, wait: bool):
    """The job's lock (a hidden file beside its journal), held while making its clips, so that two
    processes on one corpus never make the same job."""
    journal = _journal_path(out, job)
    return _locked(journal.with_name(f".{journal.name}.lock"), wait)


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (flock: released when the process dies); yields False,
    holding nothing, if another process holds it and not `wait`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _drop_torn_writes(clip: Path) -> None:
    """A kill during a clip's atomic write leaves its temporary file (fileio.atomic_path) in the
    job's folder, which no other job or shard writes: leftovers go when the job resumes."""
    for tmp in clip.parent.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _fail(report: RegenerateReport, job: Job, stage: str, exc: Exception, log, bar, clips: int) -> None:
    """Record a job that cannot finish (the run goes on) and take its clips off the bar's total."""
    label = f"{job.label} ({job.condition}; {job.checkpoint_path}" + (f", vocoder {job.vocoder})" if job.vocoder else ")")
    reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
    report.failed.append(f"{label} {stage}: {reason}")
    log(f"[synth] skipped {label}: {stage}: {reason}")
    bar.total -= clips
    bar.refresh()


def condition_counts(jobs: list[Job], prompts: int) -> dict[str, int]:
    counts = Counter(job.condition for job in jobs)
    return {condition: n * prompts for condition, n in sorted(counts.items())}


def hash_checkpoint(source: str | Path) -> str:
    """The hash of the weights a checkpoint is loaded from: a folder's safetensors, or the official
    file, found as loading finds it (official_path: a file given by another registry name of it)."""
    source = official_path(source)
    weights = source / CHECKPOINT_WEIGHTS if source.is_dir() else source
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: checkpoint not found")  # its class name is in failure lines
    return sha256_file(weights)


class _Sources:
    """Loads each checkpoint and vocoder once and remembers their hashes."""

    def __init__(self, recipe: CorpusRecipe, device: str):
        self.recipe, self.device = recipe, str(resolve_device(device))
        self._generator = (None, None)
        self._vocoders: dict[str, object] = {}
        self._hashes: dict[Path, str] = {}
        # the loaded generator's mels by (seed, texts): a checkpoint's jobs follow each other (recipe.expand),
        # one per vocoder, and its mels are the same for every vocoder
        self.outputs: dict = {}

    def checkpoint_hash(self, source: Path) -> str:
        if source not in self._hashes:
            self._hashes[source] = hash_checkpoint(source)
        return self._hashes[source]

    def generator(self, job: Job):
        from sourcetrace.generators import load_checkpoint

        if self._generator[0] != job.checkpoint_path:
            spec = self.recipe.architectures[job.architecture]
            generator = load_checkpoint(job.architecture, job.checkpoint_path, spec.pretrained_config, spec.trust)
            self._generator = (job.checkpoint_path, generator.to(self.device))
            self.outputs.clear()
        return self._generator[1]

    def vocoder(self, name: str | None):
        from sourcetrace.vocoders import load_vocoder

        if name is None:
            return None
        if name not in self._vocoders:
            spec = self.recipe.vocoders[name]
            self._vocoders[name] = load_vocoder(spec.kind, str(spec.weights) if spec.weights else None, spec.config,
                                                spec.seed, name=name).to(self.device)
        return self._vocoders[name]


def job_provenance(job: Job, generator, vocoder, checkpoint_sha256: str) -> dict[str, str]:
    """The columns every clip of a job records: checkpoint hash, role, code and vocoder identities."""
    return {"checkpoint_sha256": checkpoint_sha256, "role": job.role, "implementation": generator.implementation(),
            "sourcetrace": sourcetrace.__version__, "speaker": job.speaker, "vocoder": job.vocoder or "",
            "vocoder_sha256": vocoder.identity if vocoder is not None else "", "vocoder_swapped": spell(job.swapped),
            "vocoder_family": type(vocoder).family if vocoder is not None else ""}


def _run_job(job: Job, generator, vocoder, provenance: dict[str, str], prompts, todo, out: Path, seed: int,
             batch_size: int, report: RegenerateReport, log, bar, outputs_of: dict | None = None) -> None:
    """Make the `todo` clips of one job, journalling each clip once its audio is in place
    (`outputs_of`: the generator's outputs already made, see make_clips)."""
    from sourcetrace.generators.synthesis import make_clips

    _drop_torn_writes(out / clip_location(job.label, todo[0].prompt_id, job.vocoder or "", job.swapped)[1])
    # Prompts go in fixed chunks of the recipe's batch size (where the architecture batches):
    # the noise of a chunk is drawn from its first prompt's seed, so a clip is a function of
    # (seed, batch size) whatever was interrupted; a chunk with any clip missing is redone.
    size = batch_size if generator.batched_synthesis else 1
    pending = {p.prompt_id for p in todo}
    for start in range(0, len(prompts), size):
        chunk = prompts[start:start + size]
        if not pending.intersection(p.prompt_id for p in chunk):
            continue
        where = [clip_location(job.label, p.prompt_id, job.vocoder or "", job.swapped) for p in chunk]
        chunk_seed = prompt_seed(seed, chunk[0].prompt_id)
        references = [job.reference(start + k) for k in range(len(chunk))] if job.references else None
        try:
            make_clips(generator, vocoder, [p.text for p in chunk], chunk_seed, [out / rel for _, rel in where],
                       references=[r.voice for r in references] if references else None, outputs_of=outputs_of)
        except Exception as exc:  # noqa: BLE001 - e.g. a vocoder given as an acoustic model: skip the job
            _fail(report, job, "failed at synthesis", exc, log, bar, len(pending))
            return
        for k, (prompt, (clip_id, rel)) in enumerate(zip(chunk, where)):
            append_journal(_journal_path(out, job), {
                "clip_id": clip_id, "path": rel, "architecture": job.architecture, "checkpoint": job.label,
                "prompt_id": prompt.prompt_id, "text": prompt.text, "seed": str(chunk_seed),
                "batch_size": str(size), **provenance, **({"reference": references[k].name} if references else {}),
                **{column: spell(value) for column, value in audio_facts(out / rel).items()}})
            if prompt.prompt_id in pending:
                pending.discard(prompt.prompt_id)
                report.made += 1
                bar.update(1)


def synthesize_checkpoint(job: Job, generator, vocoder, checkpoint_sha256: str, prompts, out: str | Path,
                          seed: int = 0, log: Callable[[str], None] = print, progress: bool = True) -> RegenerateReport:
    """`synth CHECKPOINT`: the recipe path with one job (batch size 1), with the same crash guarantee
    (the journal); the manifest keeps the corpus's other checkpoints and gets this job's clips."""
    out = Path(out)
    corpus = Corpus.read(out, require_files=False, allow_empty=True) if (out / MANIFEST).is_file() else Corpus(out, [])
    if any(r.checkpoint == job.label and r.architecture != job.architecture for r in corpus.rows):
        raise UsageError(f"{out / MANIFEST}: checkpoint {job.label!r} already belongs to another architecture")
    ids = [clip_location(job.label, p.prompt_id, job.vocoder or "", job.swapped)[0] for p in prompts]
    mine = set(ids)
    listed = {r.clip_id: r for r in corpus.rows if r.clip_id in mine and (out / r.path).is_file()}
    with _job_lock(out, job, wait=True):  # a second process on this job waits, then finds it done
        done = listed.keys() | _done_clips(out, job)
        todo = [p for p, clip_id in zip(prompts, ids) if clip_id not in done]
        report = RegenerateReport(jobs=1, skipped=len(prompts) - len(todo))
        if todo:
            with tqdm(total=len(prompts), initial=report.skipped, unit="clip", desc="synth", disable=not progress) as bar:
                _run_job(job, generator, vocoder, job_provenance(job, generator, vocoder, checkpoint_sha256), prompts,
                         todo, out, seed, 1, report, log, bar)
    with _locked(out / PARTS / ".manifest.lock"):  # another checkpoint's synth may have written it meanwhile
        if (out / MANIFEST).is_file():
            corpus = Corpus.read(out, require_files=False, allow_empty=True)
        journal = read_journal(_journal_path(out, job))
        journalled = dict(zip(journal, _records(out, job, journal.values())))
        rows = [r for r in (journalled.get(c) or listed.get(c) for c in ids) if r is not None and (out / r.path).is_file()]
        corpus.columns = columns_of([journal[r.clip_id] for r in rows if r.clip_id in journal], corpus.columns)
        corpus.rows = [r for r in corpus.rows if r.clip_id not in mine] + rows
        corpus.write()
    report.manifest_written = True
    return report


def regenerate(recipe: CorpusRecipe, out: str | Path, shard: Shard = Shard(), device: str = "cpu",
               log: Callable[[str], None] = print, progress: bool = True) -> RegenerateReport:
    """Generate (this shard's part of) the recipe's corpus into `out`; see the module docstring."""
    out = Path(out)
    prompts = read_prompts(recipe.prompts)
    jobs = expand(recipe)
    mine = shard.take(jobs)
    for condition, clips in condition_counts(jobs, len(prompts)).items():
        log(f"[synth] {condition}: {clips} clips")
    log(f"[synth] {len(jobs)} jobs x {len(prompts)} prompts = {len(jobs) * len(prompts)} clips"
        + (f"; shard {shard}: {len(mine)} jobs" if shard.count > 1 else ""))
    report = RegenerateReport(jobs=len(mine))
    done = {job: _done_clips(out, job) for job in mine}
    bar = tqdm(total=len(mine) * len(prompts), initial=sum(len(d) for d in done.values()), unit="clip",
               desc="synth", disable=not progress, smoothing=0.1)
    sources = _Sources(recipe, device)

    def make(job: Job, counted: int) -> None:
        """The job's missing clips, under its lock: clips another process made since `counted` were
        counted are skipped (and shown on the bar)."""
        finished = _done_clips(out, job)
        todo = [p for p in prompts if clip_location(job.label, p.prompt_id, job.vocoder or "", job.swapped)[0]
                not in finished]
        report.skipped += len(prompts) - len(todo)
        bar.update(len(finished) - counted)
        if not todo:
            return
        try:
            generator, vocoder = sources.generator(job), sources.vocoder(job.vocoder)
            provenance = job_provenance(job, generator, vocoder, sources.checkpoint_hash(job.checkpoint_path))
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint is reported and skipped, the rest goes on
            _fail(report, job, "cannot be loaded", exc, log, bar, len(todo))
            return
        _run_job(job, generator, vocoder, provenance, prompts, todo, out, recipe.seed, recipe.batch_size, report,
                 log, bar, outputs_of=sources.outputs)

    busy = []
    for job in mine:
        if len(done[job]) == len(prompts):
            report.skipped += len(prompts)
            continue
        with _job_lock(out, job, wait=False) as mine_now:
            if mine_now:
                make(job, len(done[job]))
            else:
                busy.append(job)  # another process is making it: take the other jobs first
    for job in busy:
        log(f"[synth] {job.label} ({job.vocoder or 'own vocoder'}): another process is making it; waiting")
        with _job_lock(out, job, wait=True):
            make(job, len(done[job]))
    bar.close()
    report.manifest_written = write_manifest(recipe, out, jobs, prompts)
    return report


def write_manifest(recipe: CorpusRecipe, out: Path, jobs: list[Job], prompts) -> bool:
    """manifest.csv from the journals, in recipe order, once every clip of every job exists."""
    rows, clips = [], []
    for job in jobs:
        journal = read_journal(_journal_path(out, job))
        mine = [journal.get(clip_location(job.label, prompt.prompt_id, job.vocoder or "", job.swapped)[0])
                for prompt in prompts]
        if any(row is None or not (out / row["path"]).is_file() for row in mine):
            return False
        rows += mine
        clips += _records(out, job, mine)
    Corpus(root=out, rows=clips, columns=columns_of(rows)).write()
    return True


def _records(out: Path, job: Job, rows) -> list[ClipRecord]:
    """The manifest records of journal rows (checked as a manifest's rows are)."""
    return records(_journal_path(out, job), [(f"clip {row['clip_id']!r}", row) for row in rows])


def check_against_recipe(corpus: Corpus, recipe: CorpusRecipe) -> list[str]:
    """Every way the manifest departs from what the recipe asks for (clip set, labels, vocoder
    conditions, seeds, checkpoint hashes), one line each, naming the manifest line."""
    from sourcetrace.generators import generator_class
    from sourcetrace.vocoders import vocoder_class

    sources = _Sources(recipe, "cpu")
    prompts = read_prompts(recipe.prompts)
    expected = {}
    for job in expand(recipe):
        size = recipe.batch_size if generator_class(job.architecture).batched_synthesis else 1
        for i, prompt in enumerate(prompts):
            clip_id, rel = clip_location(job.label, prompt.prompt_id, job.vocoder or "", job.swapped)
            expected[clip_id] = (job, prompt, rel, prompts[i - i % size].prompt_id, job.reference(i))
    problems = []
    seen = set()
    for line, row in enumerate(corpus.rows, start=2):
        clip_id = row.clip_id
        if clip_id not in expected:
            problems.append(f"{MANIFEST} line {line}: clip {clip_id!r} is not in the recipe")
            continue
        seen.add(clip_id)
        job, prompt, rel, seed_prompt, reference = expected[clip_id]
        want = {"path": rel, "architecture": job.architecture, "checkpoint": job.label,
                "prompt_id": prompt.prompt_id, "text": prompt.text, "vocoder": job.vocoder or "",
                "vocoder_swapped": spell(job.swapped), "speaker": job.speaker,
                "vocoder_family": vocoder_class(recipe.vocoders[job.vocoder].kind).family if job.vocoder else "",
                "seed": str(prompt_seed(recipe.seed, seed_prompt))}
        if reference is not None:
            want["reference"] = reference.name
        try:
            want["checkpoint_sha256"] = sources.checkpoint_hash(job.checkpoint_path)
        except FileNotFoundError:
            pass  # the checkpoint is not on this machine: its hash cannot be checked here
        for key, value in want.items():
            if row.cell(key) != value:
                problems.append(f"{MANIFEST} line {line}: {key} is {row.cell(key)!r}, the recipe says {value!r}")
    missing = [c for c in expected if c not in seen]
    if missing:
        problems.append(f"{len(missing)} clip(s) of the recipe are not in the manifest, e.g. {missing[:3]}")
    return problems
