"""Attribute clips against a support corpus: what `sourcetrace attribute` does, as a library.

The ranking (kNN votes) is at the level the user asks for, say checkpoint. The unknown decision
is separate: one outlier score (distance to the nearest support clips, whatever their labels)
against a threshold calibrated by holding out whole groups at `unknown_level` (default:
architecture), so "unknown" means "from no known architecture", not "from no known checkpoint".
A clip whose audio is byte-identical to a support clip is never unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcetrace.attribution.extractors.base import FeatureExtractor
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.store import ExtractionReport, FeatureStore
from sourcetrace.attribution.unknown import UNKNOWN, UnknownDetector
from sourcetrace.core.audio import MAX_CLIP_SECONDS, AudioRejected
from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.corpus import ClipRecord, Corpus, label_values


@dataclass
class Support:
    """The support corpus's vectors (clips the extractor rejected left out) and their audio hashes."""

    store: FeatureStore
    rows: list[ClipRecord]
    vectors: np.ndarray
    audio_sha256: dict[str, str]  # clip_id -> sha256 of its audio
    report: ExtractionReport

    @classmethod
    def load(cls, corpus: Corpus, extractor: FeatureExtractor, store_root: str | Path | None = None,
             progress: bool = False, max_seconds: float | None = MAX_CLIP_SECONDS) -> Support:
        """Vectors from the feature store, computing the missing ones first."""
        store = FeatureStore(corpus, extractor, root=store_root, max_seconds=max_seconds)
        report = store.compute(progress=progress)
        rejected = {clip_id for clip_id, _, _ in report.rejects}
        rows = [row for row in corpus.rows if row.clip_id not in rejected]
        if not rows:
            raise UsageError(f"{corpus.manifest_path}: no support clips to attribute against "
                             f"({len(corpus.rows)} in the manifest, {len(rejected)} rejected by {extractor.name})")
        return cls(store, rows, store.load([row.clip_id for row in rows]), store.audio_hashes(), report)

    @property
    def corpus(self) -> Corpus:
        return self.store.corpus

    @property
    def extractor(self) -> FeatureExtractor:
        return self.store.extractor

    def labels(self, level: str) -> np.ndarray:
        """Every kept clip's value of manifest column `level`."""
        kept = {row.clip_id for row in self.rows}
        values = label_values(self.corpus, level)
        return np.array([v for row, v in zip(self.corpus.rows, values) if row.clip_id in kept])


class SupportAttributor:
    """kNN attribution at `level` plus unknown detection calibrated at `unknown_level`.

    `threshold`: use this one instead of calibrating; `detect_unknown=False`: always name a known
    class. Calibration: `attribution.unknown.calibrate_holding_out` with `folds` prompt folds.
    """

    def __init__(self, support: Support, level: str = "checkpoint", unknown_level: str = "architecture",
                 k: int = 56, metric: str = "cosine", standardize: bool = False, threshold: float | None = None,
                 detect_unknown: bool = True, folds: int = 5, seed: int = 0):
        self.support, self.level = support, level
        self.max_seconds = support.store.max_seconds  # new clips are held to the support's limit
        self.unknown_level = unknown_level if detect_unknown and threshold is None else None
        labels = support.labels(level)

        def make() -> KNNAttributor:
            return KNNAttributor(k=k, metric=metric, standardize=standardize)

        self.knn = make().fit(support.vectors, labels)
        self.detector = UnknownDetector(self.knn, threshold) if detect_unknown else None
        if self.unknown_level is not None:
            self.detector.calibrate_holding_out(make, support.vectors, labels, support.labels(self.unknown_level),
                                                support.labels("prompt_id"), folds=folds, seed=seed,
                                                level=self.unknown_level)
        self._support_clips: dict[str, list[int]] = {}
        for i, row in enumerate(support.rows):
            self._support_clips.setdefault(support.audio_sha256[row.clip_id], []).append(i)
        self._labels = labels

    @property
    def threshold(self) -> float | None:
        return None if self.detector is None else self.detector.threshold

    @property
    def calibration(self) -> dict | None:
        """How the threshold was set: calibrated (with its level and rates), given, or None (off)."""
        if self.detector is None:
            return None
        if self.detector.calibration_ is None:
            return {"source": "given", "threshold": self.detector.threshold}
        return {"source": "calibrated", **self.detector.calibration_}

    def attribute(self, clips: list[str | Path]) -> tuple[list[dict], list[dict]]:
        """(answers, errors): an answer per clip that can serve, in order; an error per clip that cannot.

        An answer: `verdict` (the best candidate, or `unknown`), `outlier_score`, `threshold`,
        `support_clips` (support clips with byte-identical audio, with their labels) and
        `candidates` (label, vote share, mean and nearest distance, best first)."""
        kept, Q, errors = self._extract(clips)
        if not kept:
            return [], errors
        scores = self.knn.outlier_score(Q)
        unknown = self.detector.is_unknown_score(scores) if self.detector else np.zeros(len(Q), bool)
        answers = []
        for clip, ranked, score, is_unknown in zip(kept, self.knn.rank(Q), scores, unknown):
            same = [{"clip_id": self.support.rows[i].clip_id, "label": str(self._labels[i])}
                    for i in self._support_clips.get(sha256_file(clip), [])]
            answers.append({"clip": str(clip), "verdict": UNKNOWN if is_unknown and not same else ranked[0]["label"],
                            "outlier_score": float(score), "threshold": self.threshold, "support_clips": same,
                            "candidates": ranked})
        return answers, errors

    def _extract(self, clips: list[str | Path]) -> tuple[list, np.ndarray, list[dict]]:
        """The clips that can serve, their vectors, and an error per clip that cannot (with the
        reasons the feature store gives its own clips)."""
        extractor = self.support.extractor
        waves, kept, errors = [], [], []
        for clip in clips:
            try:
                wave = extractor.read_clip(clip, self.max_seconds)
            except AudioRejected as exc:
                errors.append({"clip": str(clip), "error": exc.reason})
                continue
            waves.append(wave)
            kept.append(clip)
        Q = np.empty((len(waves), self.support.vectors.shape[1]), np.float32)
        for batch in extractor.plan_batches([len(w) for w in waves]) if waves else []:
            Q[batch] = extractor.extract([waves[i] for i in batch])
        finite = np.isfinite(Q).all(1)
        errors += [{"clip": str(clip), "error": "extractor produced non-finite values"}
                   for clip, ok in zip(kept, finite) if not ok]
        return [clip for clip, ok in zip(kept, finite) if ok], Q[finite], errors
