"""Synthesise a prompt set with one checkpoint into a corpus, resumably and deterministically.

Each prompt's noise comes from a seed derived from (seed, prompt id), so a clip does not depend on
which other prompts were synthesised, in what order, or whether the run was interrupted. Every
clip is written to a temporary file and renamed; the manifest is rewritten (atomically) every
`flush_every` clips and at the end, so a killed run loses at most the clips since the last flush,
and a rerun skips every clip already in the manifest with its file present.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import torch

from sourcetrace.corpus import MANIFEST, Corpus, audio_facts
from sourcetrace.datasets.prompts import Prompt
from sourcetrace.fileio import atomic_path
from sourcetrace.vocoders.base import Vocoder

from .base import Generator


def prompt_seed(seed: int, prompt_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16)


def open_corpus(folder: Path) -> Corpus:
    return (Corpus.read(folder, require_files=False, allow_empty=True) if (folder / MANIFEST).is_file()
            else Corpus(root=folder, rows=[]))


def make_clips(generator: Generator, vocoder: Vocoder | None, texts: list[str], seed: int,
               paths: list[Path]) -> None:
    """Synthesise clips in one batch (noise drawn from `seed`) and write each (16-bit WAV) atomically."""
    torch.manual_seed(seed)
    ids = [generator.synthesis_ids(text) for text in texts]
    outputs = generator.synthesize_batch(ids) if len(ids) > 1 else [generator.synthesize(ids[0])]
    waves = outputs if vocoder is None else vocoder.batch(outputs, generator.mel_config)
    for wave, path in zip(waves, paths, strict=True):
        with atomic_path(path) as tmp:
            sf.write(tmp, wave.detach().cpu().numpy().astype(np.float32), generator.mel_config.sample_rate,
                     subtype="PCM_16", format="WAV")


def make_clip(generator: Generator, vocoder: Vocoder | None, text: str, clip_seed: int, path: Path) -> None:
    """One clip with its own noise seed."""
    make_clips(generator, vocoder, [text], clip_seed, [path])


def clip_location(checkpoint: str, prompt_id: str, vocoder: str = "", swapped: bool = False) -> tuple[str, str]:
    """(clip_id, relative audio path) of one clip; a swapped-vocoder clip lives beside the default
    one under the vocoder's name, so both conditions coexist in one corpus."""
    stem = f"{checkpoint}@{vocoder}" if swapped else checkpoint
    return f"{stem}/{prompt_id}", f"audio/{stem}/{prompt_id}.wav"


def synthesize_prompts(generator: Generator, checkpoint: str, prompts: Sequence[Prompt], out: str | Path,
                       vocoder: Vocoder | None = None, vocoder_swapped: bool = False, seed: int = 0,
                       provenance: dict[str, str] | None = None, flush_every: int = 50,
                       log: Callable[[str], None] = print) -> tuple[int, int]:
    """Append one clip per prompt for `checkpoint` (e.g. 'gradtts/step-000020'); returns (made, skipped).

    Every row records the vocoder (name, sha256, swapped or not), the clip's seed, the audio's
    sha256 / rate / duration, and the `provenance` columns given (checkpoint hash, code versions)."""
    out = Path(out)
    if generator.end_to_end and vocoder is not None:
        raise ValueError(f"{generator.architecture} is end to end (its own decoder makes the waveform): "
                         "it has no vocoder to swap")
    if not generator.end_to_end and vocoder is None:
        raise ValueError(f"{generator.architecture} makes mel spectrograms: give a vocoder")
    vocoder_name = vocoder.name if vocoder is not None else ""
    corpus = open_corpus(out)
    if any(r["checkpoint"] == checkpoint and r["architecture"] != generator.architecture for r in corpus.rows):
        raise ValueError(f"{out / MANIFEST}: checkpoint {checkpoint!r} already belongs to another architecture")
    done = {r["clip_id"] for r in corpus.rows if (out / r["path"]).is_file()}
    corpus.rows = [r for r in corpus.rows if r["clip_id"] in done]  # drop rows whose audio vanished
    made = skipped = 0
    for prompt in prompts:
        clip_id, rel = clip_location(checkpoint, prompt.prompt_id, vocoder_name, vocoder_swapped)
        if clip_id in done:
            skipped += 1
            continue
        clip_seed = prompt_seed(seed, prompt.prompt_id)
        make_clip(generator, vocoder, prompt.text, clip_seed, out / rel)
        corpus.rows.append({
            "clip_id": clip_id, "path": rel, "architecture": generator.architecture, "checkpoint": checkpoint,
            "prompt_id": prompt.prompt_id, "text": prompt.text, "vocoder": vocoder_name,
            "vocoder_swapped": "1" if vocoder_swapped else "0",
            "vocoder_sha256": vocoder.identity if vocoder is not None else "", "seed": str(clip_seed),
            **(provenance or {}), **audio_facts(out / rel),
        })
        made += 1
        if made % flush_every == 0:
            corpus.write()
            log(f"[synth] {checkpoint}: {made + skipped}/{len(prompts)}")
    if made or not (out / MANIFEST).is_file():
        corpus.write()
    return made, skipped
