"""One training wiring for `sourcetrace train` and `sourcetrace run`: which model a run starts from,
which steps it saves under which names, and the trainer call.

    zero-init    the schedule's seeded, untrained models      zero-init-s<seed>
    from scratch a seeded model trained to each step          step-<N>
    fine-tune    a checkpoint trained on; the last step named  ft-<speaker> (or the name given)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sourcetrace.checkpoints.registry import load_schedule
from sourcetrace.core.errors import UsageError
from sourcetrace.core.naming import checkpoint_complete, finetune_name, is_speaker_id, step_name, zero_init_name
from sourcetrace.datasets.hifitts import HiFiTTS
from sourcetrace.datasets.ljspeech import LJSpeech, standard_split


def save_zero_inits(architecture: str, config: str | None, seeds, run_dir: Path) -> list[Path]:
    """The seeded untrained models, each saved once (one already there is kept: a rerun resumes)."""
    from sourcetrace.generators import build_generator
    from sourcetrace.generators.training import save_zero_init

    folders = []
    for seed in seeds:
        folder = Path(run_dir) / "checkpoints" / zero_init_name(seed)
        if not checkpoint_complete(folder):
            save_zero_init(build_generator(architecture, config, seed), run_dir, folder.name)
        folders.append(folder)
    return folders


def train_run(architecture: str, config: str | None, run_dir: Path, training_data: Callable, *, steps: list[int],
              seed: int, batch_size: int, device: str, init_from: str | Path | None = None, trust: bool = False,
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


def ljspeech_train_split(folder: str | Path):
    """The train split of an LJSpeech folder: its split.tsv if present, else the standard split."""
    split_file = Path(folder) / "split.tsv"
    return LJSpeech(folder, split=standard_split(split_file) if split_file.is_file() else None).items("train")


def finetune_subset(folder: str | Path, speaker: str, clips: int):
    """The seeded `clips`-clip subset of `speaker` in a HiFi-TTS folder: what a fine-tune trains on."""
    return HiFiTTS(folder).study_subset(speaker, n=clips)


def training_utterances(data: str | Path, speaker: str | None, clips: int):
    """What `sourcetrace train --data FOLDER` trains on, told by the folder: an LJSpeech folder
    (metadata.csv), or any folder without a fine-tune speaker, gives its train split; otherwise the
    folder is HiFi-TTS and gives the fine-tune subset of `speaker`."""
    if speaker is None or (Path(data) / "metadata.csv").is_file():
        return ljspeech_train_split(data)
    return finetune_subset(data, speaker, clips)


def zero_inits_from_schedule(architecture: str, config: str | None, schedule: str, run_dir: str | Path) -> list[Path]:
    """`sourcetrace train --zero-init`: the named schedule's zero-init models of one architecture."""
    return save_zero_inits(architecture, config, load_schedule(schedule).zero_init_seeds, Path(run_dir))


def train_from_folder(architecture: str, run_dir: str | Path, data: str | Path | None, *, config: str | None = "default",
                      schedule: str = "study", steps: list[int] | None = None, seed: int = 0, batch_size: int | None = None,
                      device: str = "auto", init_from: str | Path | None = None, trust: bool = False,
                      speaker: str | None = None, tensorboard: bool = True, deterministic: bool = True,
                      vocoder_weights: str | None = None, vocoder_kind: str | None = None,
                      vocoder_config: str | None = None, log: Callable[[str], None] = print):
    """`sourcetrace train`: one run on a dataset folder (an LJSpeech folder from scratch, a HiFi-TTS
    folder with `init_from`), on the named schedule's steps unless `steps` are given;
    a fine-tune's last checkpoint is named ft-<speaker>. Returns the trainer's report."""
    from sourcetrace.generators import EndToEndGenerator, generator_class
    from sourcetrace.generators.data import TrainingData

    plan = load_schedule(schedule)
    run_dir = Path(run_dir)
    if not data:
        raise UsageError("--data is required (an LJSpeech folder, or a HiFi-TTS folder with --init-from)")
    chosen = list(steps or ()) or ([plan.finetune_steps] if init_from else list(plan.steps))
    if speaker is not None and not (init_from and is_speaker_id(speaker)):
        raise UsageError(f"--speaker {speaker!r}: a fine-tune's speaker id (letters, digits, '-', '_'), "
                         "given with --init-from")
    speaker = speaker or plan.finetune_speaker
    utterances = training_utterances(data, speaker, plan.finetune_clips)
    vocoder = None  # a checkpoint's sample goes to TensorBoard as audio too
    if vocoder_weights and not issubclass(generator_class(architecture), EndToEndGenerator):
        from sourcetrace.vocoders import load_vocoder

        vocoder = load_vocoder(vocoder_kind or generator_class(architecture).default_vocoder, vocoder_weights,
                               vocoder_config)
    return train_run(architecture, config, run_dir,
                     lambda generator: TrainingData(generator, utterances, cache_dir=run_dir / "features", progress=True),
                     steps=chosen, seed=seed, batch_size=batch_size or plan.batch_size, device=device,
                     init_from=init_from, trust=trust, final_name=finetune_name(speaker), tensorboard=tensorboard,
                     vocoder=vocoder, deterministic=deterministic, log=log)
