"""The attributor interface, scikit-learn style: fit on support vectors and labels, predict queries.

A new attributor is one file: subclass `Attributor`, set `name`, implement `fit`, `predict_scores`
and (for unknown detection) `outlier_score`, and add it to the built-ins of
`sourcetrace.core.plugins.ATTRIBUTORS`, or ship it as a plug-in (entry point group `sourcetrace.attributors`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from sourcetrace.core.errors import UsageError


def check_support(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2:
        raise UsageError(f"support vectors must be a 2-D array (clips, dims), got shape {X.shape}")
    if len(X) != len(y):
        raise UsageError(f"{len(X)} support vectors but {len(y)} labels")
    if len(X) == 0:
        raise UsageError("empty support set")
    if not np.isfinite(X).all():
        raise UsageError("support vectors contain NaN or inf")
    if len(np.unique(y)) < 2:
        raise UsageError("support set has fewer than 2 classes: nothing to attribute between")
    return X, y


#: Rows checked for NaN/inf at once: the check's temporary stays small whatever the number of queries.
CHECK_ROWS = 65536


def check_query(X, dim: int) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != dim:
        raise UsageError(f"query vectors must have shape (n, {dim}), got {X.shape}")
    if not all(np.isfinite(X[start: start + CHECK_ROWS]).all() for start in range(0, len(X), CHECK_ROWS)):
        raise UsageError("query vectors contain NaN or inf")
    return X


class Attributor(ABC):
    name: str = ""
    classes_: np.ndarray
    #: A capability the benchmark asks for, never a name: the attributor votes among the k nearest
    #: support vectors of a label-independent search (kNN's interface: k, metric, standardize,
    #: chunk_size, label_support, kneighbors, relabel, scores_from_neighbors), so one search can
    #: serve many splits and levels, and validation F1 can be drawn against k.
    votes_among_neighbours: ClassVar[bool] = False

    @abstractmethod
    def fit(self, X, y) -> Attributor:
        ...

    @abstractmethod
    def predict_scores(self, X) -> np.ndarray:
        """(n, len(classes_)) scores; higher means more likely. Rows need not sum to 1."""

    def predict(self, X) -> np.ndarray:
        """The best-scoring class; ties go to the first class in sorted order (as in scikit-learn)."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_scores(X), axis=1)]

    def outlier_score(self, X) -> np.ndarray:
        """Higher = further from everything seen in fit. Default: 1 - the best class score."""
        return 1.0 - self.predict_scores(X).max(axis=1)

    def params(self) -> dict:
        return {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(support_vectors, labels) first")
