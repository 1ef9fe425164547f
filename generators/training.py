"""Training with a checkpoint schedule, for any generator.

A run folder holds `checkpoints/<name>/` (weights as safetensors + generator.json) at exactly the
scheduled optimizer steps, and `resume/step-N/` (weights, optimizer and RNG states, step) written at
every checkpoint and every `resume_every` steps. A resume point is published whole (written into a
hidden folder, its manifest of hashes last, then renamed into place; the previous one is removed
only after) and checked when loaded, so killing a run at any moment and starting it again continues
from the last complete resume point and yields the same checkpoints, bit for bit, as an
uninterrupted run: the batch order is a function of (seed, step) and every RNG state is restored.
Nothing the toolkits' own trainers do (deleting old checkpoints, counting steps differently)
applies here.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sourcetrace.core.fileio import atomic_path, sha256_file, torn_writes, write_json_atomic
from sourcetrace.core.naming import step_name, step_of
from sourcetrace.generators.base import (
    CHECKPOINT_META,
    CHECKPOINT_WEIGHTS,
    EndToEndGenerator,
    Generator,
    GeneratorError,
    InferenceOnly,
    read_checkpoint_meta,
)
from sourcetrace.generators.data import TrainingData

RESUME = "resume"
TRAINER_STATE = "trainer.pt"        # step, optimizer and RNG states: plain tensors and lists (weights-only)
RESUME_MANIFEST = "manifest.json"   # written last: the step and every other file's sha256
RESUME_FILES = (CHECKPOINT_WEIGHTS, CHECKPOINT_META, TRAINER_STATE)

@dataclass
class TrainReport:
    steps_run: int
    resumed_from: int
    checkpoints: list[Path]
    seconds_per_step: float


def _rng_state() -> dict:
    """Every global RNG a training step may draw from, in types torch.load(weights_only=True) reads."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(python_state), python_gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_resume(run_dir: Path, generator: Generator, optimizers: list[torch.optim.Optimizer], step: int,
                 run: dict, reached: Callable[[str, int], None]) -> None:
    """Publish the resume point of `step` whole: its files go into a hidden folder, then its manifest
    (step and hashes), then the folder is renamed to resume/step-N; all but it and the one before are
    removed after that, so an interruption at any moment leaves at least one complete resume point."""
    root = run_dir / RESUME
    final = root / step_name(step)
    partial = root / f".partial-{final.name}"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted write
    generator.save(partial, step, role="resume", on_written=lambda name: reached(f"resume/{name}", step))
    with atomic_path(partial / TRAINER_STATE) as tmp:
        torch.save({"step": step, "optimizers": [o.state_dict() for o in optimizers], "rng": _rng_state(),
                    "run": run}, tmp)
    reached(f"resume/{TRAINER_STATE}", step)
    write_json_atomic(partial / RESUME_MANIFEST,
                      {"step": step, "sha256": {name: sha256_file(partial / name) for name in RESUME_FILES}})
    reached(f"resume/{RESUME_MANIFEST}", step)
    if final.exists():
        shutil.rmtree(final)  # a refused resume point of this step (an intact one would have been resumed)
    os.replace(partial, final)
    _fsync_dir(root)
    reached("resume/published", step)
    # Keep the previous resume point too: it is what a damaged newest one falls back to. Remove
    # older ones, partial folders and files of the layout before resume points were folders.
    earlier = sorted((e for e in root.iterdir() if e.is_dir() and (_resume_step(e) or step) < step), key=_resume_step)
    keep = {final, *earlier[-1:]}
    for entry in root.iterdir():
        if entry not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    reached("resume/pruned", step)


def _drop_torn_checkpoint_writes(run_dir: Path) -> None:
    """A kill while a checkpoint's file was being written leaves its temporary file (fileio's
    `.model.safetensors.<random>.tmp`) in the checkpoint folder: remove those, and only those, at the
    next start or resume, so a finished run's checkpoint folders hold only the checkpoint."""
    for folder in sorted((run_dir / "checkpoints").glob("*/")):
        for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_META):
            for tmp in torn_writes(folder / name):
                tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _resume_step(folder: Path) -> int | None:
    return step_of(folder.name)


def _checked_resume_point(folder: Path) -> dict:
    """The trainer state of a complete resume point; raises GeneratorError saying what is wrong when
    its files do not all belong to the step its manifest names."""
    manifest_file = folder / RESUME_MANIFEST
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        step, hashes = int(manifest["step"]), dict(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GeneratorError(f"{manifest_file}: unreadable or incomplete ({type(exc).__name__}: {exc})") from None
    if _resume_step(folder) != step or sorted(hashes) != sorted(RESUME_FILES):
        raise GeneratorError(f"{manifest_file}: names step {step} and files {sorted(hashes)}, expected "
                             f"{folder.name} and {sorted(RESUME_FILES)}")
    for name, digest in hashes.items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            raise GeneratorError(f"{folder / name}: missing or changed since the manifest was written")
    try:
        state = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a file it cannot read weights-only
        raise GeneratorError(f"{folder / TRAINER_STATE}: cannot be read weights-only "
                             f"({type(exc).__name__}: {exc})") from None
    weights_step = read_checkpoint_meta(folder)["step"]
    if state["step"] != step or weights_step != step:
        raise GeneratorError(f"{folder}: weights of step {weights_step}, trainer state of step {state['step']}, "
                             f"manifest of step {step}")
    return state


def _latest_resume_point(run_dir: Path, log: Callable[[str], None]) -> tuple[Path, dict] | None:
    """The newest complete resume point and its trainer state; each one refused is reported."""
    root = run_dir / RESUME
    folders = sorted((f for f in root.glob("step-*") if _resume_step(f) is not None), key=_resume_step, reverse=True)
    if (root / TRAINER_STATE).is_file():
        log(f"[train] {root}: resume files without a manifest refused (written by an older sourcetrace, which did "
            f"not check that weights and trainer state are of one step); {_fallback(folders, 0)}")
    for i, folder in enumerate(folders):
        try:
            return folder, _checked_resume_point(folder)
        except GeneratorError as exc:
            log(f"[train] resume point refused: {exc}; {_fallback(folders, i + 1)}")
    return None


def _fallback(folders: list[Path], i: int) -> str:
    return f"using {folders[i].name}" if i < len(folders) else "starting from step 0"


def train(generator: Generator, data: TrainingData, run_dir: str | Path, steps: list[int], batch_size: int,
          seed: int, names: Callable[[int], str] = step_name, resume_every: int = 100,
          stop_after: int | None = None, log: Callable[[str], None] = print, tensorboard: bool = True,
          sample_vocoder=None, log_every_s: float = 60.0, deterministic: bool = True,
          after_write: Callable[[str, int], None] | None = None) -> TrainReport:
    """Train until the last scheduled step, saving `checkpoints/<names(step)>` at each scheduled step.

    `stop_after` ends the run early at that step (as if interrupted; the resume point is kept).
    `sample_vocoder` (mel -> waveform) adds the checkpoint's sample as audio to TensorBoard.
    `deterministic` makes a run reproducible bit for bit: on CPU it turns oneDNN off (its
    convolution backward is not: FastPitch's aligner gradients drift by ~1e-9 between identical
    steps), which slows full-size CPU models markedly (perf/bench_generators.py
    --nondeterministic measures it); on CUDA it asks cuDNN for deterministic kernels and makes torch refuse any
    op that has none (`determinism(strict=True)`), so a run is reproducible or stops naming the op.
    `after_write(what, step)` is called after each optimizer step ("trained") and after each file
    or folder put in place ("checkpoint/model.safetensors", "checkpoint/generator.json",
    "resume/<each of RESUME_FILES and RESUME_MANIFEST>", "resume/published", "resume/pruned"):
    where the interruption tests kill the process.
    """
    if isinstance(generator, InferenceOnly):
        raise GeneratorError(f"{generator.architecture} is inference-only: {generator.inference_only_reason}")
    _launch_numba_threads()
    with determinism(deterministic, strict=generator.device.type == "cuda"):
        return _train(generator, data, Path(run_dir), steps, batch_size, seed, names, resume_every, stop_after, log,
                      tensorboard, sample_vocoder, log_every_s, after_write or (lambda what, step: None))


def _launch_numba_threads() -> None:
    """Keep the CPU thread count the caller set for the whole run. numba's OpenMP pool, launched by
    the first parallel call in a process (NeMo's FastPitch alignment search), resets the OpenMP
    thread count that torch shares to numba's (all CPUs): a run's steps then used one count or
    another depending on whether an earlier run in the process had launched it. Launching it here
    (a no-op once launched) and setting the count back makes every run compute with one count."""
    numba = sys.modules.get("numba")  # imported with the model's stack if that stack uses it
    if numba is not None:
        threads = torch.get_num_threads()
        numba.get_num_threads()
        torch.set_num_threads(threads)


NONDETERMINISTIC_OP = re.compile(r"^(\S+) does not have a deterministic implementation")
NONDETERMINISTIC_ADVICE = ("to train anyway, give `sourcetrace train --nondeterministic` or the recipe key [training] "
                           "deterministic = false: the run is then not reproducible bit for bit (nor is its resume)")


@contextmanager
def determinism(enabled: bool, strict: bool = False):
    """Bit-reproducible training kernels while inside (see `train`); nothing changes when disabled.
    `strict` also sets torch.use_deterministic_algorithms (and cuBLAS's deterministic workspace, for
    a process that has not used cuBLAS yet): an op without a deterministic kernel then raises, and
    that error becomes a GeneratorError naming the op and what to do."""
    if not enabled:
        yield
        return
    was_strict, was_warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if strict:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=True, benchmark=False,
                                                                                     deterministic=True):
            yield
    except RuntimeError as exc:
        op = NONDETERMINISTIC_OP.match(str(exc))
        if op is None:
            raise
        raise GeneratorError(f"{op.group(1)} has no deterministic implementation on this device, and deterministic "
                             f"training needs one; {NONDETERMINISTIC_ADVICE}") from exc
    finally:
        torch.use_deterministic_algorithms(was_strict, warn_only=was_warn_only)


def _train(generator: Generator, data: TrainingData, run_dir: Path, steps: list[int], batch_size: int, seed: int,
           names: Callable[[int], str], resume_every: int, stop_after: int | None, log: Callable[[str], None],
           tensorboard: bool, sample_vocoder, log_every_s: float, reached: Callable[[str, int], None]) -> TrainReport:
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] <= 0:
        raise GeneratorError(f"schedule steps must be positive, got {steps}")
    _drop_torn_checkpoint_writes(run_dir)
    optimizers = generator.optimizers()
    start = 0
    # What decides the batches and the checkpoints: a resumed run must use the same.
    run = {"seed": int(seed), "batch_size": int(batch_size), "steps": steps, "clips": len(data)}
    resume = _latest_resume_point(run_dir, log)
    if resume is not None:
        folder, state = resume
        meta = read_checkpoint_meta(folder)
        if meta["architecture"] != generator.architecture or meta["config"]["model"] != generator.config["model"]:
            raise GeneratorError(f"{run_dir}: holds a run of another model ({meta['architecture']}, "
                                 f"config {meta['config']['name']!r}); use a new --run-dir")
        generator.load_weights(folder)
        optimizers = generator.optimizers()
        if state["run"] != run:
            raise GeneratorError(f"{run_dir}: was started with {state['run']}, now asked for {run}; resuming would "
                                 "not reproduce the run. Use the same options or a new --run-dir")
        for optimizer, saved_state in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved_state)
        _set_rng_state(state["rng"])
        start = int(state["step"])
        log(f"[train] resuming {run_dir} at step {start}")
    else:
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
    writer = _tensorboard(run_dir) if tensorboard else None
    end = steps[-1] if stop_after is None else min(stop_after, steps[-1])
    saved = []
    generator.model.train()
    t0 = last_log = time.perf_counter()
    for step in range(start, end):
        batch = data.batch(step, batch_size, seed).to(generator.device)
        losses = generator.train_step(batch, optimizers)
        total = sum(losses.values())
        done = step + 1
        reached("trained", done)
        if writer is not None:
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value.item(), done)
            writer.add_scalar("loss/total", total.item(), done)
        if done in steps:
            folder = generator.save(run_dir / "checkpoints" / names(done), done, role="scheduled",
                                    on_written=lambda name: reached(f"checkpoint/{name}", done))  # noqa: B023 - runs in this step
            saved.append(folder)
            _save_resume(run_dir, generator, optimizers, done, run, reached)
            log(f"[train] step {done}: checkpoint {folder.name} (loss {total.item():.4f})")
            if writer is not None:
                _log_sample(writer, generator, data, done, sample_vocoder)
        elif done % resume_every == 0:
            _save_resume(run_dir, generator, optimizers, done, run, reached)
        now = time.perf_counter()
        if now - last_log > log_every_s:
            rate = (done - start) / (now - t0)
            eta = int((end - done) / rate)
            log(f"[train] step {done}/{end}, loss {total.item():.4f}, {rate:.2f} steps/s, "
                f"ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}")
            last_log = now
    elapsed = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    ran = max(end - start, 0)
    return TrainReport(ran, start, saved, elapsed / ran if ran else 0.0)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None  # tensorboard is optional
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _log_sample(writer, generator: Generator, data: TrainingData, step: int, vocoder=None) -> None:
    """The first training sentence synthesised at this checkpoint (fixed noise): mel image, and
    audio when a vocoder is given (or the model is end to end)."""
    end_to_end = isinstance(generator, EndToEndGenerator)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        output = generator.synthesize(data.ids[0].tolist())
        wave = output if end_to_end else (vocoder(output) if vocoder is not None else None)
    finally:
        torch.set_rng_state(state)  # logging must not change the training run
    if not end_to_end:
        image = (output - output.min()) / (output.max() - output.min() + 1e-9)
        writer.add_image("sample/mel", image.flip(0).unsqueeze(0), step)
    if wave is not None:
        writer.add_audio("sample/audio", wave.unsqueeze(0), step, sample_rate=generator.mel_config.sample_rate)


def save_zero_init(generator: Generator, run_dir: str | Path, name: str) -> Path:
    return generator.save(Path(run_dir) / "checkpoints" / name, 0, role="zero-init")
