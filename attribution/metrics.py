"""Scores the project reports. Every class counts: one never predicted scores F1 = 0."""

from __future__ import annotations

import numpy as np


def _labels(y_true, y_pred, labels) -> np.ndarray:
    if labels is None:
        return np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))
    return np.asarray(labels)


def macro_f1(y_true, y_pred, labels=None) -> float:
    """Macro F1 over `labels` (default: every label seen in truth or prediction)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=_labels(y_true, y_pred, labels), average="macro", zero_division=0))


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
        raise ValueError("out-of-domain calibration needs both known and unknown validation clips")
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
