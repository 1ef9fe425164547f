"""Linear-probe baseline: standardised features -> multinomial logistic regression."""

from __future__ import annotations

import math

import numpy as np

from sourcetrace.attribution.base import Attributor, check_query, check_support
from sourcetrace.core.errors import UsageError


class LinearProbeAttributor(Attributor):
    name = "probe"

    def __init__(self, C: float = 1.0, max_iter: int = 2000, seed: int = 0):
        """Checked here, as scikit-learn's LogisticRegression would check them only when fitted."""
        if not (math.isfinite(float(C)) and float(C) > 0):
            raise UsageError(f"probe C (inverse regularisation strength) must be a positive number, not {C!r}")
        if int(max_iter) < 1:
            raise UsageError(f"probe max_iter must be a positive integer, not {max_iter!r}")
        if not 0 <= int(seed) < 2**32:
            raise UsageError(f"probe seed must be an integer in 0..{2**32 - 1}, not {seed!r}")
        self.C, self.max_iter, self.seed = float(C), int(max_iter), int(seed)

    def params(self) -> dict:
        return {"C": self.C, "max_iter": self.max_iter, "seed": self.seed}

    def fit(self, X, y) -> LinearProbeAttributor:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = check_support(X, y)
        self._pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed))
        self._pipeline.fit(X, y)
        self.classes_ = self._pipeline.classes_
        self._dim = X.shape[1]
        return self

    def logits(self, X) -> np.ndarray:
        """(n, classes) logits, whose softmax is `predict_scores`; two classes: (0, log-odds)."""
        self._check_fitted()
        z = self._pipeline.decision_function(check_query(X, self._dim))
        return np.stack([np.zeros_like(z), z], axis=1) if z.ndim == 1 else z

    def predict_scores(self, X) -> np.ndarray:
        self._check_fitted()
        return self._pipeline.predict_proba(check_query(X, self._dim))
