"""`sourcetrace synth`: one checkpoint's clips of a prompt set, or a whole recipe's corpus (a shard of it).

Both pin the CPU thread count first (audio made on the CPU depends on it) and report it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sourcetrace.core.device import pin_threads
from sourcetrace.core.errors import UsageError
from sourcetrace.core.naming import PRETRAINED, checkpoint_label, checkpoint_role
from sourcetrace.datasets.prompts import read_prompts
from sourcetrace.pipeline.recipe import Job, Reference, Shard, load_recipe
from sourcetrace.pipeline.regenerate import RegenerateReport, hash_checkpoint, regenerate, synthesize_checkpoint


@dataclass
class SynthOutcome:
    report: RegenerateReport
    threads: int             # the CPU threads the audio was made with
    label: str | None = None  # one checkpoint's label in the corpus (synthesize_one)


def synthesize_one(checkpoint: str | Path, prompts: str | Path, out: str | Path, *, architecture: str | None = None,
                   config: str = "default", trust: bool = False, label: str | None = None,
                   references: list[str] | None = None, seed: int = 0, vocoder_weights: str | None = None,
                   vocoder_kind: str | None = None, vocoder_config: str | None = None,
                   vocoder_name: str | None = None, vocoder_swapped: bool = False, random_vocoder: int | None = None,
                   device: str = "auto", threads: int | None = None) -> SynthOutcome:
    """The clips of every prompt of `prompts` by one checkpoint (a folder of `sourcetrace train` or an
    official file), into the corpus `out` (created, or appended to); resumable, like a recipe's job.
    A mel generator needs a vocoder (`vocoder_weights`, or `random_vocoder` for tests), an end-to-end
    one takes none; a zero-shot generator needs `references`, any other takes none."""
    from sourcetrace.generators import EndToEndGenerator, ZeroShot, load_checkpoint
    from sourcetrace.vocoders import load_vocoder

    count = pin_threads(threads)
    checkpoint = Path(checkpoint)
    generator = load_checkpoint(architecture, checkpoint, config, trust).to(device)
    vocoder = None
    if not isinstance(generator, EndToEndGenerator):
        if not vocoder_weights and random_vocoder is None:
            raise UsageError(f"{generator.architecture} makes mel spectrograms: give --vocoder-weights FILE "
                             "(an official HiFi-GAN) or --random-vocoder SEED (untrained, for tests)")
        vocoder = load_vocoder(vocoder_kind or generator.default_vocoder, vocoder_weights, vocoder_config,
                               random_vocoder, name=vocoder_name).to(generator.device)
    elif vocoder_weights or random_vocoder is not None:
        raise UsageError(f"{generator.architecture} is end to end: it has no vocoder to give or swap")
    if isinstance(generator, ZeroShot) != bool(references):
        raise UsageError(f"{generator.architecture} speaks in the voice of reference clips: give --reference CLIP "
                         "or --reference speaker:NAME (repeatable; prompt i gets reference i mod n)"
                         if isinstance(generator, ZeroShot) else
                         f"{generator.architecture} speaks in its trained voice: it takes no --reference")
    label = label or checkpoint_label(generator.architecture, checkpoint.name if checkpoint.is_dir() else PRETRAINED)
    job = Job(generator.architecture, label, checkpoint_role(label), checkpoint, vocoder.name if vocoder else None,
              vocoder_swapped, speaker="", references=tuple(Reference.parse(r, Path) for r in references or ()))
    report = synthesize_checkpoint(job, generator, vocoder, hash_checkpoint(checkpoint), read_prompts(prompts), out,
                                   seed=seed)
    return SynthOutcome(report, count, label)


def synthesize_recipe(recipe: str | Path, out: str | Path, shard: str | Shard | None = None, device: str = "auto",
                      threads: int | None = None) -> SynthOutcome:
    """A recipe's whole [corpus] into `out`, or one shard of its jobs ("K/N": every N-th job from K)."""
    shard = Shard.parse(shard) if isinstance(shard, str) else shard or Shard()
    count = pin_threads(threads)
    return SynthOutcome(regenerate(load_recipe(recipe), out, shard=shard, device=device), count)
