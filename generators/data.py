"""Training data for any generator: (symbol ids, log-mel) pairs and a deterministic batch order.

Mels are computed once per clip and kept as .npy files in a cache folder (the run folder's
`mels/` from the CLI), so a 13,100-clip LJSpeech run holds only the current batch in memory and a
resumed run does not recompute them. The batch of a step is a pure function of (seed, step): a
seeded permutation per epoch, so a run resumed at step s sees exactly the batches an uninterrupted
run sees.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sourcetrace.audio import AudioRejected, load_audio
from sourcetrace.datasets.ljspeech import Utterance
from sourcetrace.fileio import atomic_path

from .base import Batch, Generator, GeneratorError
from .mel import mel_spectrogram

FRAME_MULTIPLE = 4  # both U-Net decoders downsample twice: mel frames padded to a multiple of 4


class TrainingData:
    def __init__(self, generator: Generator, utterances: Sequence[Utterance], cache_dir: str | Path | None = None,
                 progress: bool = False):
        if not utterances:
            raise GeneratorError("no training utterances")
        self._tmp = None if cache_dir else tempfile.TemporaryDirectory(prefix="sourcetrace-mels-")
        self.cache_dir = Path(cache_dir or self._tmp.name)
        convention = hashlib.sha256(repr(sorted(generator.mel_config.as_dict().items())).encode()).hexdigest()[:12]
        self.ids: list[torch.Tensor] = []
        self.mel_files: list[Path] = []
        rejected = []
        from tqdm import tqdm

        for utt in tqdm(utterances, desc="mels", unit="clip", disable=not progress):
            mel_file = self.cache_dir / convention / f"{utt.speaker}-{utt.utt_id}.npy"
            if not mel_file.is_file():
                try:
                    wave = load_audio(utt.audio, generator.mel_config.sample_rate)
                except AudioRejected as exc:
                    rejected.append(str(exc))
                    continue
                mel = mel_spectrogram(torch.from_numpy(wave), generator.mel_config).numpy()
                with atomic_path(mel_file) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, mel)
            self.ids.append(torch.tensor(generator.text_to_ids(utt.text), dtype=torch.long))
            self.mel_files.append(mel_file)
        if rejected:
            raise GeneratorError(f"{len(rejected)} training clip(s) unusable: " + "; ".join(rejected[:5]))

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[i], torch.from_numpy(np.load(self.mel_files[i], allow_pickle=False))

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The batch of optimizer step `step` (0-based): epochs of seeded permutations, last partial batch dropped."""
        size = min(batch_size, len(self))
        per_epoch = len(self) // size
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        return collate([self.item(int(i)) for i in order[position * size:(position + 1) * size]])


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    ids_max = max(len(ids) for ids, _ in items)
    frames = max(mel.shape[-1] for _, mel in items)
    frames = -(-frames // FRAME_MULTIPLE) * FRAME_MULTIPLE
    n_mels = items[0][1].shape[0]
    ids = torch.zeros(len(items), ids_max, dtype=torch.long)
    mels = torch.zeros(len(items), n_mels, frames)
    for i, (x, y) in enumerate(items):
        ids[i, : len(x)] = x
        mels[i, :, : y.shape[-1]] = y
    return Batch(ids, torch.tensor([len(x) for x, _ in items]), mels, torch.tensor([y.shape[-1] for _, y in items]))
