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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sourcetrace.core.audio import AudioRejected, load_audio
from sourcetrace.core.fileio import atomic_path
from sourcetrace.datasets.ljspeech import Utterance
from sourcetrace.generators.base import Batch, Generator, GeneratorError

FRAME_MULTIPLE = 4  # both U-Net decoders downsample twice: mel frames padded to a multiple of 4


class TrainingData:
    def __init__(self, generator: Generator, utterances: Sequence[Utterance], cache_dir: str | Path | None = None,
                 progress: bool = False):
        if not utterances:
            raise GeneratorError("no training utterances")
        self._tmp = None if cache_dir else tempfile.TemporaryDirectory(prefix="sourcetrace-mels-")
        self.cache_dir = Path(cache_dir or self._tmp.name)
        convention = hashlib.sha256(generator.feature_identity().encode()).hexdigest()[:12]
        self.ids: list[torch.Tensor] = []
        self.feature_files: list[Path] = []
        rejected = []

        for utt in tqdm(utterances, desc="features", unit="clip", disable=not progress):
            ids = generator.text_to_ids(utt.text)
            tag = hashlib.sha256(repr(ids).encode()).hexdigest()[:8]  # features may depend on the symbols
            feature_file = self.cache_dir / convention / f"{utt.speaker}-{utt.utt_id}-{tag}.npz"
            if not feature_file.is_file():
                try:
                    wave = load_audio(utt.audio, generator.mel_config.sample_rate)
                except AudioRejected as exc:
                    rejected.append(str(exc))
                    continue
                features = generator.clip_features(torch.from_numpy(wave), ids)
                with atomic_path(feature_file) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **{k: v.detach().cpu().numpy() for k, v in features.items()})
            self.ids.append(torch.tensor(ids, dtype=torch.long))
            self.feature_files.append(feature_file)
        if rejected:
            raise GeneratorError(f"{len(rejected)} training clip(s) unusable: " + "; ".join(rejected[:5]))

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with np.load(self.feature_files[i], allow_pickle=False) as stored:
            return self.ids[i], {k: torch.from_numpy(stored[k]) for k in stored.files}

    def batch(self, step: int, batch_size: int, seed: int) -> Batch:
        """The batch of optimizer step `step` (0-based): epochs of seeded permutations, last partial batch dropped."""
        size = min(batch_size, len(self))
        per_epoch = len(self) // size
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        batch = collate([self.item(int(i)) for i in order[position * size:(position + 1) * size]])
        batch.epoch = epoch
        return batch


def collate(items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> Batch:
    """Zero-pad ids and every feature to the batch's largest shape (mel frames to a multiple of 4)."""
    ids = torch.zeros(len(items), max(len(x) for x, _ in items), dtype=torch.long)
    for i, (x, _) in enumerate(items):
        ids[i, : len(x)] = x
    features, lengths = {}, {}
    for name in items[0][1]:
        shape = [max(f[name].shape[d] for _, f in items) for d in range(items[0][1][name].dim())]
        if name == "mel":
            shape[-1] = -(-shape[-1] // FRAME_MULTIPLE) * FRAME_MULTIPLE
        padded = torch.zeros(len(items), *shape, dtype=items[0][1][name].dtype)
        for i, (_, f) in enumerate(items):
            padded[(i, *(slice(0, n) for n in f[name].shape))] = f[name]
        features[name] = padded
        lengths[name] = torch.tensor([f[name].shape[-1] for _, f in items])
    return Batch(ids, torch.tensor([len(x) for x, _ in items]), features, lengths)
