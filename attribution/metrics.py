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


def ood_metrics(known_scores, unknown_scores) -> dict:
    """Detection of unknown clips from outlier scores (higher = more likely unknown).

    eer and its threshold (a score above it means unknown); auroc (unknown as the positive class);
    fpr_at_95tpr: the share of unknown clips accepted as known when 95 % of known clips are accepted.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    known = np.asarray(known_scores, dtype=np.float64)
    unknown = np.asarray(unknown_scores, dtype=np.float64)
    if len(known) == 0 or len(unknown) == 0:
        raise UsageError("out-of-domain calibration needs both known and unknown validation clips")
    y = np.concatenate([np.zeros(len(known)), np.ones(len(unknown))])
    s = np.concatenate([known, unknown])
    fpr, tpr, thresholds = roc_curve(y, s)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    accept_95 = np.quantile(known, 0.95, method="higher")
    return {
        "eer": float((fpr[i] + fnr[i]) / 2.0),
        "threshold": float(thresholds[i]) if np.isfinite(thresholds[i]) else float(s.max()),
        "auroc": float(roc_auc_score(y, s)),
        "fpr_at_95tpr": float(np.mean(unknown <= accept_95)),
        "n_known": int(len(known)),
        "n_unknown": int(len(unknown)),
    }
