"""Manifest rows with the study's structure and clustered feature vectors, without audio.

For tests of the protocol machinery and for timing the benchmark at the study's scale: every
checkpoint is a Gaussian cluster around its architecture's centre, so attribution is easy at
architecture level and harder at checkpoint level, as in the study.
"""

from __future__ import annotations

import numpy as np

from sourcetrace.naming import PRETRAINED, checkpoint_label, finetune_name, step_name, zero_init_name

STUDY_ARCHITECTURES = ("fastpitch", "gradtts", "matcha", "vits")
END_TO_END = ("vits",)  # no mel spectrogram: its vocoder cannot be swapped
STUDY_STEPS = (50_000, 75_000, 100_000, 250_000, 275_000, 300_000, 450_000, 475_000, 500_000)


def study_checkpoints(arch: str, steps=STUDY_STEPS, zero_init_seeds=(1, 2, 3)) -> list[str]:
    names = [PRETRAINED, *map(step_name, steps), *map(zero_init_name, zero_init_seeds), finetune_name("9136")]
    return [checkpoint_label(arch, name) for name in names]


def study_rows(n_prompts: int = 600, architectures=STUDY_ARCHITECTURES, vocoder_variants: bool = True) -> list[dict]:
    """Rows of a complete study corpus: every checkpoint x prompt with its default vocoder, plus,
    for mel architectures' pretrained and scheduled checkpoints, the other mel architectures' HiFi-GANs."""
    mel = [a for a in architectures if a not in END_TO_END]
    rows = []
    for arch in architectures:
        default = f"hifigan-{arch}" if arch in mel else "internal"
        for ckpt in study_checkpoints(arch):
            for p in range(n_prompts):
                prompt = f"LJ-{p:04d}"
                rows.append({"clip_id": f"{ckpt}/{prompt}", "path": f"{ckpt}/{prompt}.wav", "architecture": arch,
                             "checkpoint": ckpt, "prompt_id": prompt, "text": "", "vocoder": default,
                             "vocoder_swapped": "0"})
                swappable = ckpt.endswith("/pretrained") or "/step-" in ckpt
                if vocoder_variants and arch in mel and swappable:
                    for other in mel:
                        if other != arch:
                            rows.append({"clip_id": f"{ckpt}/{prompt}@hifigan-{other}", "path": f"{ckpt}/{prompt}@{other}.wav",
                                         "architecture": arch, "checkpoint": ckpt, "prompt_id": prompt, "text": "",
                                         "vocoder": f"hifigan-{other}", "vocoder_swapped": "1"})
    return rows


def clustered_vectors(rows: list[dict], dim: int = 64, seed: int = 0, arch_spread: float = 4.0,
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
        out[i] = (centre("a:" + r["architecture"], arch_spread) + centre("c:" + r["checkpoint"], ckpt_spread)
                  + centre("v:" + r.get("vocoder", ""), ckpt_spread))
    out += rng.standard_normal(out.shape).astype(np.float32) * noise
    return out
