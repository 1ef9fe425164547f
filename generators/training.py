"""Training with a checkpoint schedule, for any generator.

A run folder holds `checkpoints/<name>/` (weights as safetensors + generator.json) at exactly the
scheduled optimizer steps, and `resume/` (weights, optimizer and RNG states) rewritten at every
checkpoint and every `resume_every` steps. Killing a run and starting it again continues from the
last resume point and yields the same checkpoints, bit for bit, as an uninterrupted run: the batch
order is a function of (seed, step) and every RNG state is restored. Nothing the toolkits' own
trainers do (deleting old checkpoints, counting steps differently) applies here.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sourcetrace.fileio import atomic_path

from .base import Generator, GeneratorError, read_checkpoint_meta
from .data import TrainingData

RESUME = "resume"


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
                 run: dict) -> None:
    folder = run_dir / RESUME
    generator.save(folder, step, role="resume")
    with atomic_path(folder / "trainer.pt") as tmp:
        torch.save({"step": step, "optimizers": [o.state_dict() for o in optimizers], "rng": _rng_state(),
                    "run": run}, tmp)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def train(generator: Generator, data: TrainingData, run_dir: str | Path, steps: list[int], batch_size: int,
          seed: int, names: Callable[[int], str] = checkpoint_name, resume_every: int = 100,
          stop_after: int | None = None, log: Callable[[str], None] = print, tensorboard: bool = True,
          sample_vocoder=None, log_every_s: float = 60.0, deterministic: bool = True) -> TrainReport:
    """Train until the last scheduled step, saving `checkpoints/<names(step)>` at each scheduled step.

    `stop_after` ends the run early at that step (as if interrupted; the resume point is kept).
    `sample_vocoder` (mel -> waveform) adds the checkpoint's sample as audio to TensorBoard.
    `deterministic` makes a run reproducible bit for bit: on CPU it turns oneDNN off (its
    convolution backward is not: FastPitch's aligner gradients drift by ~1e-9 between identical
    steps), which costs up to 2x on full-size CPU models (benchmarks/bench_generators.py
    --nondeterministic); on CUDA it asks cuDNN for deterministic kernels.
    """
    with determinism(deterministic):
        return _train(generator, data, Path(run_dir), steps, batch_size, seed, names, resume_every, stop_after, log,
                      tensorboard, sample_vocoder, log_every_s)


@contextmanager
def determinism(enabled: bool):
    """Bit-reproducible training kernels while inside (see `train`); nothing changes when disabled."""
    if not enabled:
        yield
        return
    with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=True, benchmark=False,
                                                                                 deterministic=True):
        yield


def _train(generator: Generator, data: TrainingData, run_dir: Path, steps: list[int], batch_size: int, seed: int,
           names: Callable[[int], str], resume_every: int, stop_after: int | None, log: Callable[[str], None],
           tensorboard: bool, sample_vocoder, log_every_s: float) -> TrainReport:
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] <= 0:
        raise GeneratorError(f"schedule steps must be positive, got {steps}")
    optimizers = generator.optimizers()
    start = 0
    # What decides the batches and the checkpoints: a resumed run must use the same.
    run = {"seed": int(seed), "batch_size": int(batch_size), "steps": steps, "clips": len(data)}
    if (run_dir / RESUME / "trainer.pt").is_file():
        meta = read_checkpoint_meta(run_dir / RESUME)
        if meta["architecture"] != generator.architecture or meta["config"]["model"] != generator.config["model"]:
            raise GeneratorError(f"{run_dir}: holds a run of another model ({meta['architecture']}, "
                                 f"config {meta['config']['name']!r}); use a new --run-dir")
        generator.load_weights(run_dir / RESUME)
        optimizers = generator.optimizers()
        state = torch.load(run_dir / RESUME / "trainer.pt", map_location="cpu", weights_only=True)
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
        if writer is not None:
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value.item(), done)
            writer.add_scalar("loss/total", total.item(), done)
        if done in steps:
            folder = generator.save(run_dir / "checkpoints" / names(done), done, role="scheduled")
            saved.append(folder)
            _save_resume(run_dir, generator, optimizers, done, run)
            log(f"[train] step {done}: checkpoint {folder.name} (loss {total.item():.4f})")
            if writer is not None:
                _log_sample(writer, generator, data, done, sample_vocoder)
        elif done % resume_every == 0:
            _save_resume(run_dir, generator, optimizers, done, run)
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
    state = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        output = generator.synthesize(data.ids[0].tolist())
        wave = output if generator.end_to_end else (vocoder(output) if vocoder is not None else None)
    finally:
        torch.set_rng_state(state)  # logging must not change the training run
    if not generator.end_to_end:
        image = (output - output.min()) / (output.max() - output.min() + 1e-9)
        writer.add_image("sample/mel", image.flip(0).unsqueeze(0), step)
    if wave is not None:
        writer.add_audio("sample/audio", wave.unsqueeze(0), step, sample_rate=generator.mel_config.sample_rate)


def save_zero_init(generator: Generator, run_dir: str | Path, name: str) -> Path:
    return generator.save(Path(run_dir) / "checkpoints" / name, 0, role="zero-init")
