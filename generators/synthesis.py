"""Clips of a checkpoint, deterministically: the seeds and the batch synthesis that writes them.

Each clip's noise comes from a seed derived from (seed, prompt id) (of a batch's first prompt), so a
clip does not depend on which other prompts were synthesised, in what order, or whether the run was
interrupted. Each clip is written to a temporary file and renamed. Which clips to make, and the
journal that makes a killed run resumable, are sourcetrace.pipeline.regenerate's (`synth CHECKPOINT` is its
one-job case).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sourcetrace.core.fileio import atomic_path
from sourcetrace.generators.base import Generator
from sourcetrace.vocoders.base import Vocoder


def make_clips(generator: Generator, vocoder: Vocoder | None, texts: list[str], seed: int,
               paths: list[Path], references: list[str | Path] | None = None, outputs_of: dict | None = None) -> None:
    """Synthesise clips in one batch (noise drawn from `seed`) and write each (16-bit WAV) atomically;
    `references`: one reference clip per text, for zero-shot generators (`ZeroShot`).
    `outputs_of`: a mel generator's outputs by (seed, texts), kept by the caller for one generator: its
    mels are made once for all the vocoders a recipe puts them through (they depend on nothing else)."""
    key, kept = (seed, tuple(texts)), outputs_of is not None and references is None and vocoder is not None
    if kept and key in outputs_of:
        outputs = outputs_of[key]
    else:
        outputs = _synthesize(generator, texts, seed, references)
        if kept:
            outputs_of[key] = outputs
    waves = outputs if vocoder is None else vocoder.batch(outputs, generator.mel_config)
    for wave, path in zip(waves, paths, strict=True):
        with atomic_path(path) as tmp:
            sf.write(tmp, wave.detach().cpu().numpy().astype(np.float32), generator.mel_config.sample_rate,
                     subtype="PCM_16", format="WAV")


def _synthesize(generator: Generator, texts: list[str], seed: int, references: list[str | Path] | None) -> list:
    torch.manual_seed(seed)
    ids = [generator.synthesis_ids(text) for text in texts]
    if references is not None:  # a voice per prompt: one prompt at a time
        outputs = []
        for one, reference in zip(ids, references, strict=True):
            generator.use_reference(reference)
            outputs.append(generator.synthesize(one))
        return outputs
    return generator.synthesize_batch(ids) if len(ids) > 1 else [generator.synthesize(ids[0])]
