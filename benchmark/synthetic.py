"""Manifest rows with the study's structure and clustered feature vectors, without audio.

For tests of the protocol machinery and for timing the benchmark at the study's scale: every
checkpoint is a Gaussian cluster around its architecture's centre, so attribution is easy at
architecture level and harder at checkpoint level, as in the study. Beyond the study, rows can
carry what the other label levels read (`provenance=True`: `implementation`, `speaker`,
`vocoder_family`), more fine-tune speakers, a second VITS implementation (`vits-espnet`), and
vocoders of other families that every swappable mel checkpoint is also vocoded with.
"""

from __future__ import annotations

import numpy as np

from sourcetrace.core.naming import (
    PRETRAINED,
    checkpoint_label,
    finetune_name,
    finetune_speaker,
    step_name,
    zero_init_name,
)
from sourcetrace.core.plugins import STUDY_ARCHITECTURES
from sourcetrace.corpus.columns import ClipRecord

END_TO_END = ("vits", "vits-espnet")  # no mel spectrogram: its vocoder cannot be swapped
STUDY_STEPS = (50_000, 75_000, 100_000, 250_000, 275_000, 300_000, 450_000, 475_000, 500_000)
# The `implementation` column `sourcetrace synth` writes (`<package> <version>`), per architecture.
IMPLEMENTATIONS = {"fastpitch": "nemo-toolkit 3.0.0", "gradtts": "grad-tts 0.0.4", "matcha": "matcha-tts 0.0.7.2",
                   "vits": "coqui-tts 0.28.0", "vits-espnet": "espnet 202511"}
TRAINING_SPEAKER = "LJ"  # the `speaker` of every checkpoint but the fine-tunes


def study_checkpoints(arch: str, steps=STUDY_STEPS, zero_init_seeds=(1, 2, 3), finetune_speakers=("9136",)) -> list[str]:
    names = [PRETRAINED, *map(step_name, steps), *map(zero_init_name, zero_init_seeds),
             *map(finetune_name, finetune_speakers)]
    return [checkpoint_label(arch, name) for name in names]


def study_rows(n_prompts: int = 600, architectures=STUDY_ARCHITECTURES, vocoder_variants: bool = True, *,
               finetune_speakers=("9136",), other_vocoders: dict[str, str] | None = None,
               provenance: bool = False) -> list[ClipRecord]:
    """Rows of a complete study corpus: every checkpoint x prompt with its default vocoder, plus,
    for mel architectures' pretrained and scheduled checkpoints, the other mel architectures' HiFi-GANs
    and `other_vocoders` ({name: family}, e.g. {"vocos-mel24k": "vocos"}; the HiFi-GANs are family
    "hifigan"). `provenance`: each row also records `implementation`, `speaker` and `vocoder_family`."""
    mel = [a for a in architectures if a not in END_TO_END]
    families = {**{f"hifigan-{a}": "hifigan" for a in mel}, **(other_vocoders or {})}
    rows = []
    for arch in architectures:
        default = f"hifigan-{arch}" if arch in mel else "internal"
        swaps = [f"hifigan-{other}" for other in mel if other != arch] + sorted(other_vocoders or {})
        for ckpt in study_checkpoints(arch, finetune_speakers=finetune_speakers):
            speaker = finetune_speaker(ckpt) or TRAINING_SPEAKER
            for p in range(n_prompts):
                prompt = f"LJ-{p:04d}"
                clips = [(f"{ckpt}/{prompt}", f"{ckpt}/{prompt}.wav", default, False)]
                swappable = ckpt.endswith("/pretrained") or "/step-" in ckpt
                if vocoder_variants and arch in mel and swappable:
                    clips += [(f"{ckpt}/{prompt}@{v}", f"{ckpt}/{prompt}@{v.removeprefix('hifigan-')}.wav", v, True)
                              for v in swaps]
                for clip_id, path, vocoder, swapped in clips:
                    labels = dict(implementation=IMPLEMENTATIONS[arch], speaker=speaker,
                                  vocoder_family=families.get(vocoder, "")) if provenance else {}
                    rows.append(ClipRecord(clip_id=clip_id, path=path, architecture=arch, checkpoint=ckpt,
                                           prompt_id=prompt, text="", vocoder=vocoder, vocoder_swapped=swapped, **labels))
    return rows


def clustered_vectors(rows: list[ClipRecord], dim: int = 64, seed: int = 0, arch_spread: float = 4.0,
                      ckpt_spread: float = 1.0, noise: float = 1.0) -> np.ndarray:
    """One vector per row: architecture centre + checkpoint offset + vocoder offset + noise."""
    rng = np.random.default_rng(seed)
    centres: dict[str, np.ndarray] = {}

    def centre(key: str, spread: float) -> np.ndarray:
        if key not in centres:
            centres[key] = rng.standard_normal(dim).astype(np.float32) * spread
        return centres[key]

    out = np.empty((len(rows), dim), np.float32)
    for i, r in enumerate(rows):
        out[i] = (centre("a:" + r.architecture, arch_spread) + centre("c:" + r.checkpoint, ckpt_spread)
                  + centre("v:" + r.vocoder, ckpt_spread))
    out += rng.standard_normal(out.shape).astype(np.float32) * noise
    return out
