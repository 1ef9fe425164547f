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

from .base import Generator


def prompt_seed(seed: int, prompt_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16)


def open_corpus(folder: Path) -> Corpus:
    return Corpus.read(folder, require_files=False) if (folder / MANIFEST).is_file() else Corpus(root=folder, rows=[])


def synthesize_prompts(generator: Generator, checkpoint: str, prompts: Sequence[Prompt], out: str | Path,
                       vocoder=None, vocoder_name: str = "", seed: int = 0, implementation: str = "",
                       flush_every: int = 50, log: Callable[[str], None] = print) -> tuple[int, int]:
    """Append one clip per prompt for `checkpoint` (e.g. 'gradtts/step-000020'); returns (made, skipped)."""
    out = Path(out)
    corpus = open_corpus(out)
    if any(r["checkpoint"] == checkpoint and r["architecture"] != generator.architecture for r in corpus.rows):
        raise ValueError(f"{out / MANIFEST}: checkpoint {checkpoint!r} already belongs to another architecture")
    done = {r["clip_id"] for r in corpus.rows if (out / r["path"]).is_file()}
    corpus.rows = [r for r in corpus.rows if r["clip_id"] in done]  # drop rows whose audio vanished
    made = skipped = 0
    for prompt in prompts:
        clip_id = f"{checkpoint}/{prompt.prompt_id}"
        if clip_id in done:
            skipped += 1
            continue
        clip_seed = prompt_seed(seed, prompt.prompt_id)
        torch.manual_seed(clip_seed)
        output = generator.synthesize(generator.text_to_ids(prompt.text))
        wave = output if generator.end_to_end else vocoder(output)
        sample_rate = generator.mel_config.sample_rate
        rel = f"audio/{checkpoint}/{prompt.prompt_id}.wav"
        with atomic_path(out / rel) as tmp:
            sf.write(tmp, wave.detach().cpu().numpy().astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")
        corpus.rows.append({
            "clip_id": clip_id, "path": rel, "architecture": generator.architecture, "checkpoint": checkpoint,
            "prompt_id": prompt.prompt_id, "text": prompt.text, "vocoder": vocoder_name, "seed": str(clip_seed),
            "implementation": implementation, **audio_facts(out / rel),
        })
        made += 1
        if made % flush_every == 0:
            corpus.write()
            log(f"[synth] {checkpoint}: {made + skipped}/{len(prompts)}")
    if made or not (out / MANIFEST).is_file():
        corpus.write()
    return made, skipped
