"""k-nearest-neighbour attribution: the study's training-free attributor.

Exact brute-force search in torch on any device (`device="cuda"`: the products and the top-k on
the GPU), chunked over queries so memory stays bounded; the k best of each row are picked by a
compiled selection on the CPU (`knn_select`) and by `torch.topk` elsewhere, with the same rule.
Neighbours are ordered by (distance, support index), so ties never depend on the hardware or the
chunking (the products themselves can differ in the last bit between devices and chunk sizes); the
vote breaks ties towards the first class in sorted order, as scikit-learn's KNeighborsClassifier
does, so both give the same predictions.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from sourcetrace.attribution.base import Attributor, check_query, check_support
from sourcetrace.core.device import resolve_device
from sourcetrace.core.errors import UsageError

METRICS = ("cosine", "euclidean")
#: On the CPU, pick each query's neighbours with the compiled selection (`knn_select`, about half
#: the CPU time of `torch.topk`); False runs `top_k_by_sorting` there too. Both give the same neighbours.
select_on_cpu = True
#: The most bytes one query chunk's nearness matrix may take: with a large support the chunk has fewer
#: rows than `chunk_size` (ASVspoof 5's 180,000 support vectors: 372 rows, 256 MiB), so memory stays
#: bounded whatever the support size; the study's 2,048 x 24,000 chunks (188 MiB) are unchanged.
CHUNK_BYTES = 256 * 2**20


def compiled_selection():
    """`knn_select.select_nearest`, or None where numba cannot be imported (e.g. a NumPy newer than
    the installed numba supports), said once as a warning: `top_k_by_sorting` then picks the same
    neighbours, at about twice the CPU time."""
    try:
        from sourcetrace.attribution.knn_select import select_nearest  # compiled on first use
    except ImportError as exc:
        global select_on_cpu  # noqa: PLW0603 - the module's one flag, set once when numba is missing
        select_on_cpu = False
        warnings.warn(f"kNN on the CPU: the compiled neighbour selection is unavailable ({exc}); using "
                      "torch.topk, which picks the same neighbours more slowly", RuntimeWarning, stacklevel=2)
        return None
    return select_nearest


def top_k_by_sorting(near: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k largest entries and their columns, ties to the lowest column (the rule
    `knn_select.select_nearest` implements on the CPU): `torch.topk` on any device, plus a stable
    sort of the rows where the (k+1)-th candidate ties the k-th."""
    extra = 1 if k < near.shape[1] else 0  # one more candidate reveals a tie at the boundary
    values, index = torch.topk(near, k + extra, dim=1, largest=True, sorted=True)
    if extra:
        for row in torch.nonzero(values[:, k] == values[:, k - 1]).flatten().tolist():
            order = torch.sort(-near[row], stable=True).indices[: k + 1]
            values[row], index[row] = near[row, order], order
    return values[:, :k], index[:, :k]


class KNNAttributor(Attributor):
    name = "knn"
    votes_among_neighbours = True

    def __init__(self, k: int = 56, metric: str = "cosine", weights: str = "uniform", standardize: bool = False,
                 chunk_size: int = 2048, device: str = "cpu"):
        """`standardize`: scale every dimension to zero mean, unit variance over the support set
        first (the study's SSL setting is off; cepstral statistics need it, c0 dwarfs the rest).
        `device`: where the products and the top-k run ("cpu", "cuda", "auto"); not in params():
        it changes distances by float rounding only."""
        if metric not in METRICS:
            raise UsageError(f"metric must be one of {METRICS}, not {metric!r}")
        if weights not in ("uniform", "distance"):
            raise UsageError(f"weights must be 'uniform' or 'distance', not {weights!r}")
        if int(k) < 1:
            raise UsageError(f"k must be a positive integer, not {k!r}")
        self.k, self.metric, self.weights, self.chunk_size = int(k), metric, weights, int(chunk_size)
        self.standardize = bool(standardize)
        self.device = resolve_device(device)

    def params(self) -> dict:
        return {"k": self.k, "metric": self.metric, "weights": self.weights, "standardize": self.standardize}

    def fit(self, X, y) -> KNNAttributor:
        X, y = check_support(X, y)
        if self.k > len(X):
            raise UsageError(f"k={self.k} is larger than the support set ({len(X)} vectors); lower k")
        self.classes_, self.support_labels_ = np.unique(y, return_inverse=True)
        if self.standardize:
            self._mean, self._scale = X.mean(0), X.std(0) + 1e-8
            X = (X - self._mean) / self._scale
        support = torch.from_numpy(X).to(self.device)
        if self.metric == "cosine":
            support = torch.nn.functional.normalize(support, dim=1)
        else:
            self._support_sq = (support * support).sum(1)
        self._support = support
        return self

    def relabel(self, y) -> KNNAttributor:
        """A copy fitted on the same support vectors with other labels (say, another level), sharing
        the stored support matrix: neighbours do not depend on labels."""
        self._check_fitted()
        y = np.asarray(y)
        if len(y) != len(self.support_labels_):
            raise UsageError(f"{len(y)} labels for {len(self.support_labels_)} support vectors")
        other = copy.copy(self)
        other.classes_, other.support_labels_ = np.unique(y, return_inverse=True)
        return other

    def _prepare_queries(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((X - self._mean) / self._scale if self.standardize else X).to(self.device)

    def _nearness(self, queries: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A score per (query, support) pair that orders like -distance, in one matrix product:
        cosine similarity, or 2 q.s - |s|^2 (= |q|^2 - squared euclidean distance). `out`: a
        buffer reused between chunks (a fresh 100-MB result costs page faults every chunk)."""
        if self.metric == "cosine":
            return torch.matmul(torch.nn.functional.normalize(queries, dim=1), self._support.T, out=out)
        return torch.addmm(self._support_sq[None, :], queries, self._support.T, beta=-1.0, alpha=2.0, out=out)

    def _to_distance(self, nearness: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        if self.metric == "cosine":
            return 1.0 - nearness
        return ((queries * queries).sum(1, keepdim=True) - nearness).clamp_min_(0.0).sqrt_()

    def chunk_rows(self) -> int:
        """Query rows searched at once: `chunk_size`, fewer where their nearness matrix would pass CHUNK_BYTES."""
        return max(1, min(self.chunk_size, CHUNK_BYTES // (4 * len(self._support))))

    def kneighbors(self, X, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances and support indices of the k nearest neighbours, sorted by (distance, index)."""
        self._check_fitted()
        X = check_query(X, self._support.shape[1])
        k = self.k if k is None else int(k)
        if not 1 <= k <= len(self._support):
            raise UsageError(f"k={k} must be between 1 and the support size ({len(self._support)})")
        dist_out = np.empty((len(X), k), dtype=np.float32)
        idx_out = np.empty((len(X), k), dtype=np.int64)
        rows = self.chunk_rows()
        on_cpu = self.device.type == "cpu"
        buffer = torch.empty((min(len(X), rows), len(self._support)), device=self.device) if on_cpu else None
        for start in range(0, len(X), rows):
            chunk = self._prepare_queries(X[start: start + rows])
            near = self._nearness(chunk, out=None if buffer is None else buffer[: len(chunk)])
            select_nearest = compiled_selection() if on_cpu and select_on_cpu else None
            if select_nearest is not None:
                values, index = map(torch.from_numpy, select_nearest(near.numpy(), k, torch.get_num_threads()))
            else:
                values, index = top_k_by_sorting(near, k)
            dist = self._to_distance(values, chunk).cpu().numpy()
            index = index.cpu().numpy()
            order = np.lexsort((index, dist), axis=1)  # distance first, then index
            dist_out[start: start + len(chunk)] = np.take_along_axis(dist, order, 1)
            idx_out[start: start + len(chunk)] = np.take_along_axis(index, order, 1)
        return dist_out, idx_out

    def vote(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: class scores (n, classes) summing to 1, and the neighbour distances and indices."""
        dist, idx = self.kneighbors(X)
        return self.scores_from_neighbors(dist, idx), dist, idx

    def scores_from_neighbors(self, dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Class scores from precomputed neighbours (the first k columns are used), so one search can
        serve several label levels or several k."""
        self._check_fitted()
        dist, idx = dist[:, : self.k], idx[:, : self.k]
        labels = self.support_labels_[idx]
        if self.weights == "uniform":
            w = np.ones_like(dist)
        else:
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            exact = np.isinf(w)
            w[exact.any(1)] = exact[exact.any(1)]  # exact matches take all the weight, as in sklearn
        n_classes = len(self.classes_)
        cells = (np.arange(len(dist))[:, None] * n_classes + labels).ravel()  # summed in order, as np.add.at
        scores = np.bincount(cells, weights=w.ravel(), minlength=len(dist) * n_classes).reshape(len(dist), n_classes)
        return scores / scores.sum(1, keepdims=True)

    def predict_scores(self, X) -> np.ndarray:
        return self.vote(X)[0]

    def outlier_score(self, X) -> np.ndarray:
        """Mean distance to the k nearest support vectors (TADA's out-of-domain score)."""
        return self.kneighbors(X)[0].mean(1)

    def rank(self, X) -> list[list[dict]]:
        """Candidates per query, best first: vote share and mean distance of that class's neighbours."""
        scores, dist, idx = self.vote(X)
        labels = self.support_labels_[idx]
        ranked = []
        for q in range(len(scores)):
            rows = []
            for c in np.flatnonzero(scores[q] > 0):
                rows.append({"label": str(self.classes_[c]), "votes": float(scores[q, c]),
                             "mean_distance": float(dist[q][labels[q] == c].mean()),
                             "nearest_distance": float(dist[q][labels[q] == c].min())})
            rows.sort(key=lambda r: (-r["votes"], r["mean_distance"], r["label"]))
            ranked.append(rows)
        return ranked
