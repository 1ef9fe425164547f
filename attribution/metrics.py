"""Scores the project reports. Every class counts: one never predicted scores F1 = 0."""

from __future__ import annotations

import numpy as np

from sourcetrace.core.errors import UsageError


def _labels(y_true, y_pred, labels) -> np.ndarray:
    if labels is None:
        return np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))
    return np.asarray(labels)


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Macro F1 over `labels` (default: every label seen in truth or prediction), as scikit-learn's
    f1_score(average="macro", zero_division=0) computes it, bit for bit (tested): per label
    2 tp / (true + predicted) in float64, 0 where a label is neither, and their mean. Counted here
    because the benchmark asks for it thousands of times (F1 versus k for every k), where
    scikit-learn's per-call input checks dominated the miniature study's bench stage (perf/bench_macro_f1.py)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise UsageError(f"macro_f1: y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-d and of one length")
    labels = _labels(y_true, y_pred, labels)
    true, pred = _positions(labels, y_true), _positions(labels, y_pred)
    n = len(labels)
    tp = np.bincount(true[(true == pred) & (true >= 0)], minlength=n).astype(np.float64)
    denom = np.bincount(true[true >= 0], minlength=n).astype(np.float64) + np.bincount(pred[pred >= 0], minlength=n)
    f1 = np.zeros(n)
    np.divide(2.0 * tp, denom, out=f1, where=denom != 0)
    return float(np.nanmean(f1))


def _positions(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's index in `labels` (any order), -1 for a value not among them."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    at = np.clip(np.searchsorted(ordered, values), 0, len(labels) - 1)
    return np.where(ordered[at] == values, order[at], -1)


def per_class_report(y_true, y_pred, labels=None) -> list[dict]:
    from sklearn.metrics import precision_recall_fscore_support

    labels = _labels(y_true, y_pred, labels)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return [{"label": str(lab), "precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
            for lab, pi, ri, fi, si in zip(labels, p, r, f, s)]


def confusion(y_true, y_pred, labels=None) -> tuple[list[str], np.ndarray]:
    """Rows: true label, columns: predicted label, both in `labels` order."""
    from sklearn.metrics import confusion_matrix

    labels = _labels(y_true, y_pred, labels)
    return [str(x) for x in labels], confusion_matrix(y_true, y_pred, labels=labels)


# ---- open-set scoring as the published source-tracing results report it -------------------------
# Sign convention, everywhere below: an out-of-domain score is higher for a clip more likely to come
# from an unseen system, and a clip scoring above a threshold is called "unknown".


def roc_points(negative_scores, positive_scores, drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of scores where positives should score higher: every distinct score is
    a threshold ("score >= threshold" is called positive), from the strictest (inf, nothing called
    positive) down; as scikit-learn's roc_curve builds them, value for value. `drop_intermediate`:
    drop the points inside straight runs of the curve, as roc_curve does by default (the curve's
    line is the same; what is interpolated along it, the thresholds, is not)."""
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    if len(neg) == 0 or len(pos) == 0:
        raise UsageError(f"a ROC curve needs scores of both classes, got {len(neg)} negative and {len(pos)} positive")
    scores = np.concatenate([neg, pos])
    if not np.isfinite(scores).all():
        raise UsageError("out-of-domain scores contain NaN or inf")
    order = np.argsort(scores, kind="mergesort")[::-1]
    ordered = scores[order]
    is_positive = (order >= len(neg)).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]  # the last clip of each distinct score
    tps = np.cumsum(is_positive)[last]
    fps = 1 + last - tps
    thresholds = ordered[last]
    if drop_intermediate and len(fps) > 2:
        kept = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[kept], tps[kept], thresholds[kept]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def auroc(known_scores, unknown_scores) -> float:
    """Area under the ROC curve of unknown (positive) versus known clips: the trapezoids of the
    full curve, which equals scikit-learn's roc_auc_score (tied scores count one half)."""
    fpr, tpr, _ = roc_points(known_scores, unknown_scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def eer_and_threshold(known_scores, unknown_scores) -> tuple[float, float]:
    """The equal error rate and its threshold, as TADA's code (and most sklearn-based source-tracing
    code) computes them: the point where FPR (known called unknown) and FNR (unknown called known)
    cross on the linearly interpolated ROC curve (TADA: brentq on interp1d(fpr, tpr)), solved here in
    closed form on the crossing segment; the threshold interpolated at the same point of that segment
    between its two ends' thresholds, on roc_curve's default curve (straight runs collapsed), as TADA's
    interp1d(fpr, thresholds) does. (On a vertical segment, where interp1d(fpr, ...) is no function,
    the threshold is interpolated along the segment.) A crossing on the first segment, whose upper end
    is the inf threshold, takes the highest score as the threshold."""
    fpr, tpr, thresholds = roc_points(known_scores, unknown_scores, drop_intermediate=True)
    gap = (1.0 - tpr) - fpr  # FNR - FPR: 1 at the first point, -1 at the last, never rising along the curve
    j = int(np.argmax(gap <= 0.0))
    i = j - 1
    t = gap[i] / (gap[i] - gap[j])
    eer = fpr[i] + t * (fpr[j] - fpr[i])
    upper = thresholds[i] if np.isfinite(thresholds[i]) else thresholds[j]
    return float(eer), float(upper + t * (thresholds[j] - upper))


def fpr_at_tpr(known_scores, unknown_scores, tpr: float = 0.95) -> float:
    """FPR95 as the OOD literature reports it (known clips the positive class, -score their
    confidence): the share of unknown clips accepted as known at the strictest threshold that
    accepts at least `tpr` of the known clips; scikit-learn's roc_curve(known, -score,
    drop_intermediate=False) read at its first point with tpr >= `tpr`."""
    fpr, tpr_known, _ = roc_points(-np.asarray(unknown_scores, dtype=np.float64),
                                   -np.asarray(known_scores, dtype=np.float64))
    return float(fpr[int(np.argmax(tpr_known >= tpr))])


def detection_metrics(known_scores, unknown_scores) -> dict:
    """EER (and its threshold), AUROC and FPR95 of known versus unseen clips from their out-of-domain
    scores, as `eer_and_threshold`, `auroc` and `fpr_at_tpr` define them: the one set of names of a
    results file's open-set detection block and of unknown detection's calibration and evaluation."""
    eer, threshold = eer_and_threshold(known_scores, unknown_scores)
    return {"eer": eer, "eer_threshold": threshold, "auroc": auroc(known_scores, unknown_scores),
            "fpr95": fpr_at_tpr(known_scores, unknown_scores), "n_known": int(np.size(known_scores)),
            "n_unknown": int(np.size(unknown_scores))}


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
