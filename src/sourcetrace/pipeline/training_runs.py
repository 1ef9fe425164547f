"""One training wiring for `sourcetrace train` and `sourcetrace run`: which model a run starts from,
which steps it saves under which names, and the trainer call.

    zero-init    the schedule's seeded, untrained models      zero-init-s<seed>
    from scratch a seeded model trained to each step          step-<N>
    fine-tune    a checkpoint trained on; the last step named  ft-<speaker> (or the name given)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sourcetrace.core.naming import step_name, zero_init_name


def save_zero_inits(architecture: str, config: str | None, seeds, run_dir: Path) -> list[Path]:
    """The seeded untrained models, each saved once (one already there is kept: a rerun resumes)."""
    from sourcetrace.generators import build_generator
    from sourcetrace.generators.training import save_zero_init

    folders = []
    for seed in seeds:
        folder = Path(run_dir) / "checkpoints" / zero_init_name(seed)
        if not (folder / "generator.json").is_file():
            save_zero_init(build_generator(architecture, config, seed), run_dir, folder.name)
        folders.append(folder)
    return folders


def train_run(architecture: str, config: str | None, run_dir: Path, training_data: Callable, *, steps: list[int],
              seed: int, batch_size: int, device: str, init_from: Path | None = None, trust: bool = False,
              final_name: str | None = None, tensorboard: bool = True, vocoder=None, deterministic: bool = True,
              log: Callable[[str], None] = print):
    """Train from scratch (a model of `seed`), or fine-tune `init_from` with its last step saved as
    `final_name`; `training_data(generator)` gives the utterances' features. A `vocoder` adds each
    checkpoint's sample to TensorBoard as audio. Returns the trainer's report."""
    from sourcetrace.generators import EndToEndGenerator, build_generator, load_checkpoint
    from sourcetrace.generators.training import train

    if init_from is not None:
        generator = load_checkpoint(architecture, init_from, config, trust)
        final = final_name or step_name(steps[-1])
        names = lambda step: final if step == steps[-1] else step_name(step)  # noqa: E731
    else:
        generator, names = build_generator(architecture, config, seed), step_name
    generator.to(device)
    sample_vocoder = None
    if vocoder is not None and not isinstance(generator, EndToEndGenerator):
        sample_vocoder = lambda mel: vocoder(mel, generator.mel_config)  # noqa: E731
    return train(generator, training_data(generator), run_dir, steps, batch_size=batch_size, seed=seed, names=names,
                 tensorboard=tensorboard, sample_vocoder=sample_vocoder, deterministic=deterministic, log=log)
