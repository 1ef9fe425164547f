"""Out-of-domain ("unknown") detection as in TADA: threshold an attributor's outlier score.

The threshold sits at the equal-error point of validation clips from known and unknown
generators; a query scoring above it is attributed to `unknown`.
"""

from __future__ import annotations

import numpy as np

from .base import Attributor
from .metrics import ood_metrics

UNKNOWN = "unknown"


class UnknownDetector:
    def __init__(self, attributor: Attributor, threshold: float | None = None):
        self.attributor = attributor
        self.threshold = threshold
        self.calibration_: dict | None = None

    def calibrate(self, X_known, X_unknown) -> "UnknownDetector":
        """Set the threshold at the EER point of known vs unknown validation clips."""
        self.calibration_ = ood_metrics(self.attributor.outlier_score(X_known), self.attributor.outlier_score(X_unknown))
        self.threshold = self.calibration_["threshold"]
        return self

    def is_unknown(self, X) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("UnknownDetector has no threshold: calibrate it or pass threshold=")
        return self.attributor.outlier_score(X) > self.threshold

    def predict(self, X) -> np.ndarray:
        labels = self.attributor.predict(X).astype(object)
        labels[self.is_unknown(X)] = UNKNOWN
        return labels

    def evaluate(self, X_known, X_unknown) -> dict:
        """EER, AUROC and FPR at 95 % TPR on held-out clips, plus the error rates at the set threshold."""
        known = self.attributor.outlier_score(X_known)
        unknown = self.attributor.outlier_score(X_unknown)
        out = ood_metrics(known, unknown)
        out["threshold"] = float(self.threshold)
        out["false_unknown_rate"] = float(np.mean(known > self.threshold))
        out["missed_unknown_rate"] = float(np.mean(unknown <= self.threshold))
        return out


def calibrate_leave_one_class_out(make_attributor, X, y, validation_fraction: float = 0.1, seed: int = 0) -> dict:
    """Calibrate an unknown-threshold from a support set alone.

    Each class in turn plays the unknown generator: the attributor is fitted on the other classes
    (less a seeded validation share), which give the known scores; the held-out class gives the
    unknown scores. Pooled over classes, the EER point is the threshold. Needs >= 3 classes.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 3:
        raise ValueError(f"leave-one-class-out calibration needs at least 3 classes, got {len(classes)}; "
                         "pass an explicit threshold or disable unknown detection")
    rng = np.random.default_rng(seed)
    known_scores, unknown_scores = [], []
    for c in classes:
        rest = np.flatnonzero(y != c)
        is_val = np.zeros(len(rest), dtype=bool)
        is_val[rng.permutation(len(rest))[: max(1, int(round(validation_fraction * len(rest))))]] = True
        attributor = make_attributor().fit(X[rest[~is_val]], y[rest[~is_val]])
        known_scores.append(attributor.outlier_score(X[rest[is_val]]))
        unknown_scores.append(attributor.outlier_score(X[y == c]))
    return ood_metrics(np.concatenate(known_scores), np.concatenate(unknown_scores))
