"""The feature-extractor interface: audio clips in, one pooled vector per clip out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sourcetrace.core.audio import MAX_CLIP_SECONDS, AudioRejected, load_audio
from sourcetrace.core.fileio import sha256_json

# Bumped whenever a change to extraction code can change a vector: part of every fingerprint,
# so stored features computed by older code are never reused.
EXTRACTOR_CODE_VERSION = "1"


class SpecNotTaken(ValueError):
    """A spec that the registered kind its name picks does not take (`lfcc:3`, `ssl` without a
    layer): build_extractor answers it with the grammar."""


class FeatureExtractor(ABC):
    """Subclasses define `fingerprint`, `min_samples` and `extract`; batching is planned here."""

    sample_rate: int = 16000
    #: clips of one batch hold at most this many seconds of padded audio (None: one clip a batch)
    max_batch_seconds: float | None = None
    #: at most this many clips a batch (None: limited by max_batch_seconds only)
    batch_size: int | None = None

    @classmethod
    def from_spec(cls, spec: str, **options) -> FeatureExtractor:
        """The extractor `spec` (what `--extractor` takes) names, for the kind the EXTRACTORS registry
        found by the spec's name. A plug-in kind is called with the spec's argument (`name:argument`)
        or with none; built-ins read their own grammar and the `options` (models_dir, device, dtype,
        batch_size)."""
        _, _, argument = spec.partition(":")
        return cls(argument) if argument else cls()

    @property
    @abstractmethod
    def fingerprint(self) -> dict:
        """Everything that determines the vectors: model identity, layer(s), pooling, dtype, code version."""

    @property
    def fingerprint_hash(self) -> str:
        return sha256_json(self.fingerprint)

    @property
    @abstractmethod
    def name(self) -> str:
        """A short, file-name-safe label for humans (not an identity: see fingerprint)."""

    @abstractmethod
    def min_samples(self) -> int:
        """Shortest clip (in samples at `sample_rate`) that yields at least one frame."""

    def read_clip(self, path: str | Path, max_seconds: float | None = MAX_CLIP_SECONDS, name: str | None = None) -> np.ndarray:
        """One clip as this extractor takes it (mono, at `sample_rate`), or AudioRejected naming `name`
        (default: the path): not a regular file, unreadable, longer than `max_seconds`, or shorter
        than the receptive field."""
        try:
            wave = load_audio(path, self.sample_rate, max_seconds=max_seconds)
        except AudioRejected as exc:
            raise AudioRejected(name or path, exc.reason) from None
        if len(wave) < self.min_samples():
            raise AudioRejected(name or path, f"shorter than the extractor's receptive field ({len(wave)} < "
                                f"{self.min_samples()} samples at {self.sample_rate} Hz)")
        return wave

    @abstractmethod
    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """One batch of mono float32 clips at `sample_rate` -> float32 array (n, *vector_shape)."""

    def plan_batches(self, num_samples: Sequence[int]) -> list[list[int]]:
        """Group clip indices by sorted length so padding stays small; order inside is by length."""
        order = sorted(range(len(num_samples)), key=lambda i: (num_samples[i], i))
        budget = None if self.max_batch_seconds is None else self.max_batch_seconds * self.sample_rate
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = num_samples[i]  # sorted ascending: the newest clip is the longest
            too_many = self.batch_size is not None and len(current) >= self.batch_size
            too_long = budget is not None and current and longest * (len(current) + 1) > budget
            if current and (too_many or too_long or (budget is None and self.batch_size is None)):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches
