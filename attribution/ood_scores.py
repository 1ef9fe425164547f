"""Out-of-domain scores for open-set source tracing, behind one interface.

Each score is fitted on the support vectors and their labels (the known systems) and gives every
query one number. Sign convention: higher = more likely from a system the support never saw; a
query scoring above the calibrated threshold is called "unknown" (`unknown.above_threshold`).

Queries are scored in blocks of `block_rows` rows, so the memory a score needs beyond its inputs is
bounded by the block (and, for `knn-distance`, by the kNN's own query chunks, see `knn.CHUNK_BYTES`),
whatever the number of queries: ASVspoof 5's 680,000 eval vectors go through in blocks.

    knn-distance     mean euclidean distance to the k nearest support vectors (TADA's run_ood.py:
                     sklearn NearestNeighbors, k=1); `statistic="kth"` takes the k-th distance instead
                     (Sun et al. 2022's deep-kNN score)
    mahalanobis      smallest class-conditional Mahalanobis distance (Lee et al. 2018): class means,
                     one covariance shared by the classes (pooled within-class), shrunk towards
                     (trace/d) I by the Ledoit-Wolf intensity of the centred support, or by `shrinkage`
    cosine-centroid  1 - the largest cosine similarity to a class mean of the L2-normalised support
    energy           -T logsumexp(logits / T) of a trained head (Liu et al. 2020)
    max-logit        -max logit of a trained head (Hendrycks et al. 2022)

The trained head of `energy` and `max-logit` is the linear probe (`probe.LinearProbeAttributor`),
fitted on the same support.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from sourcetrace.attribution.base import check_query, check_support
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.probe import LinearProbeAttributor
from sourcetrace.core.errors import UsageError

#: Query rows scored at once: 65,536 x 1,024 float32 is 256 MiB per temporary copy of a block.
BLOCK_ROWS = 65536


class OODScore(ABC):
    """Fit on support vectors and labels; `score(X)`: one number per query, higher = more unknown."""

    name: ClassVar[str] = ""

    def __init__(self, block_rows: int = BLOCK_ROWS):
        if int(block_rows) < 1:
            raise UsageError(f"block_rows must be a positive integer, not {block_rows!r}")
        self.block_rows = int(block_rows)

    @abstractmethod
    def fit(self, X, y) -> OODScore:
        ...

    @abstractmethod
    def _score_block(self, X: np.ndarray) -> np.ndarray:
        """Scores of one block of checked float32 queries."""

    def params(self) -> dict:
        return {}

    def score(self, X) -> np.ndarray:
        if not hasattr(self, "dim_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(support_vectors, labels) first")
        out = np.empty(len(X), dtype=np.float64)
        for start in range(0, len(X), self.block_rows):
            block = check_query(X[start: start + self.block_rows], self.dim_)
            out[start: start + len(block)] = self._score_block(block)
        return out

    @property
    def id(self) -> str:
        """The score's identity on a leaderboard: its name and every parameter."""
        params = self.params()
        return self.name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")


class KNNDistance(OODScore):
    name = "knn-distance"

    def __init__(self, k: int = 1, statistic: str = "mean", metric: str = "euclidean", block_rows: int = BLOCK_ROWS):
        super().__init__(block_rows)
        if statistic not in ("mean", "kth"):
            raise UsageError(f"knn-distance statistic must be 'mean' or 'kth', not {statistic!r}")
        self.knn = KNNAttributor(k=k, metric=metric)  # checks k and metric now, not when fitted
        self.k, self.statistic, self.metric = int(k), statistic, metric

    def params(self) -> dict:
        return {"k": self.k, "statistic": self.statistic, "metric": self.metric}

    def fit(self, X, y) -> KNNDistance:
        X, y = check_support(X, y)
        self.knn_ = self.knn.fit(X, y)
        self.dim_ = X.shape[1]
        return self

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        dist = self.knn_.kneighbors(X)[0].astype(np.float64)
        return dist.mean(1) if self.statistic == "mean" else dist[:, -1]


def class_means(X: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(classes, dims) float64 means, each class's rows summed in float64 (a copy of one class at a time)."""
    return np.stack([X[codes == c].sum(0, dtype=np.float64) / max(int(np.sum(codes == c)), 1) for c in range(n_classes)])


def ledoit_wolf_intensity(covariance: np.ndarray, fourth: float, n: int) -> float:
    """The Ledoit-Wolf shrinkage intensity of centred data, from its covariance S = X^T X / n and the
    sum over rows of |x|^4: scikit-learn's ledoit_wolf_shrinkage(X, assume_centered=True) (tested),
    whose sum of (X^2)^T X^2 is that sum of |x|^4, without a pass over X^2 in (features x features) blocks."""
    d = len(covariance)
    mu = np.trace(covariance) / d
    delta = (np.sum(covariance * covariance) - 2.0 * mu * np.trace(covariance) + d * mu * mu) / d
    beta = min((fourth / n - np.sum(covariance * covariance)) / (d * n), delta)
    return 0.0 if beta == 0 else float(beta / delta)


class Mahalanobis(OODScore):
    name = "mahalanobis"

    def __init__(self, shrinkage: float = -1.0, block_rows: int = BLOCK_ROWS):
        """`shrinkage` in [0, 1]: Sigma' = (1 - a) Sigma + a (trace(Sigma) / d) I; negative (the
        default): a is the Ledoit-Wolf intensity of the class-centred support (sklearn), stored as
        `shrinkage_`."""
        super().__init__(block_rows)
        if float(shrinkage) > 1.0:
            raise UsageError(f"mahalanobis shrinkage must be at most 1 (negative: Ledoit-Wolf), not {shrinkage!r}")
        self.shrinkage = float(shrinkage)

    def params(self) -> dict:
        return {"shrinkage": "ledoit-wolf" if self.shrinkage < 0 else self.shrinkage}

    def fit(self, X, y) -> Mahalanobis:
        X, y = check_support(X, y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        means = class_means(X, codes, len(self.classes_))
        n, d = X.shape
        covariance = np.zeros((d, d))
        fourth = 0.0  # sum over clips of |x - mean|^4, for the Ledoit-Wolf intensity
        for start in range(0, n, self.block_rows):  # float64, one block of centred rows at a time
            block = X[start: start + self.block_rows].astype(np.float64) - means[codes[start: start + self.block_rows]]
            covariance += block.T @ block
            fourth += float(np.sum(np.einsum("ij,ij->i", block, block) ** 2))
        covariance /= n
        mu = np.trace(covariance) / d
        self.shrinkage_ = ledoit_wolf_intensity(covariance, fourth, n) if self.shrinkage < 0 else self.shrinkage
        shrunk = (1.0 - self.shrinkage_) * covariance + self.shrinkage_ * mu * np.eye(len(covariance))
        # Whitening W with W W^T = shrunk^-1: distances become euclidean after x -> x W.
        try:
            lower = np.linalg.cholesky(shrunk)
        except np.linalg.LinAlgError:
            raise UsageError("mahalanobis: the support's within-class covariance is singular; give shrinkage > 0") from None
        self.whiten_ = np.linalg.inv(lower).T.astype(np.float32)
        self.centres_ = (means @ self.whiten_.astype(np.float64)).astype(np.float32)
        self.dim_ = X.shape[1]
        return self

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(X) @ torch.from_numpy(self.whiten_)
        centres = torch.from_numpy(self.centres_)
        squared = (z * z).sum(1, keepdim=True) - 2.0 * z @ centres.T + (centres * centres).sum(1)[None, :]
        return squared.min(1).values.clamp_min_(0.0).double().numpy()


class CosineCentroid(OODScore):
    name = "cosine-centroid"

    def fit(self, X, y) -> CosineCentroid:
        X, y = check_support(X, y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        means = class_means(unit, codes, len(self.classes_))
        self.centroids_ = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        self.dim_ = X.shape[1]
        return self

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        unit = torch.nn.functional.normalize(torch.from_numpy(X), dim=1)
        return (1.0 - (unit @ torch.from_numpy(self.centroids_).T).max(1).values).double().numpy()


class _TrainedHead(OODScore):
    """A score read from the logits of a linear probe fitted on the support."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000, seed: int = 0, block_rows: int = BLOCK_ROWS):
        super().__init__(block_rows)
        self.head = LinearProbeAttributor(C=C, max_iter=max_iter, seed=seed)  # checks them now, not when fitted
        self.C, self.max_iter, self.seed = self.head.C, self.head.max_iter, self.head.seed

    def params(self) -> dict:
        return {"head": "probe", "C": self.C, "max_iter": self.max_iter, "seed": self.seed}

    def fit(self, X, y) -> _TrainedHead:
        X, y = check_support(X, y)
        self.head_ = self.head.fit(X, y)
        self.dim_ = X.shape[1]
        return self


class Energy(_TrainedHead):
    name = "energy"

    def __init__(self, temperature: float = 1.0, C: float = 1.0, max_iter: int = 2000, seed: int = 0,
                 block_rows: int = BLOCK_ROWS):
        super().__init__(C, max_iter, seed, block_rows)
        if not float(temperature) > 0:
            raise UsageError(f"energy temperature must be positive, not {temperature!r}")
        self.temperature = float(temperature)

    def params(self) -> dict:
        return {**super().params(), "temperature": self.temperature}

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(self.head_.logits(X).astype(np.float64))
        return (-self.temperature * torch.logsumexp(logits / self.temperature, dim=1)).numpy()


class MaxLogit(_TrainedHead):
    name = "max-logit"

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        return -self.head_.logits(X).astype(np.float64).max(1)


OOD_SCORES: dict[str, type[OODScore]] = {cls.name: cls for cls in (KNNDistance, Mahalanobis, CosineCentroid, Energy, MaxLogit)}


def build_ood_score(text: str) -> OODScore:
    """`name[:key=value,...]`, e.g. `knn-distance:k=5,statistic=kth` or `mahalanobis:shrinkage=0.1`;
    every parameter checked here, before anything is fitted."""
    name, _, rest = text.partition(":")
    if name not in OOD_SCORES:
        raise UsageError(f"unknown out-of-domain score {name!r}; choose one of {', '.join(OOD_SCORES)}")
    cls = OOD_SCORES[name]
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in defaults:
            raise UsageError(f"out-of-domain score {text!r}: bad parameter {item!r}; {name} takes {', '.join(defaults)}")
        kind = type(defaults[key])
        try:
            typed = kind(value) if kind is not str else value
        except ValueError:
            raise UsageError(f"out-of-domain score {text!r}: {key}={value!r} is not {kind.__name__}") from None
        if isinstance(typed, float) and not math.isfinite(typed):
            raise UsageError(f"out-of-domain score {text!r}: {key}={value!r} is not a finite number")
        params[key] = typed
    try:
        return cls(**params)
    except UsageError as exc:
        raise UsageError(f"out-of-domain score {text!r}: {exc}") from None
