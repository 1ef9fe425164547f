"""Out-of-domain ("unknown") detection as in TADA: threshold an attributor's outlier score.

The threshold sits at the equal-error point of validation clips from known and unknown
generators; a query scoring above it is attributed to `unknown`. Without validation clips of a
real unknown generator, `calibrate_holding_out` makes them from the support set: each group (by
default each architecture) in turn plays the unknown generator.
"""

from __future__ import annotations

import numpy as np

from sourcetrace.attribution.base import Attributor
from sourcetrace.attribution.metrics import accuracy, detection_metrics, eer_and_threshold, macro_f1
from sourcetrace.core.errors import UsageError

UNKNOWN = "unknown"


def above_threshold(scores, threshold: float) -> np.ndarray:
    """The decision rule: an outlier score above the threshold means unknown."""
    return np.asarray(scores) > threshold


def check_threshold_rule(rule: str) -> float | None:
    """The share R of a rule "fpr=R", None for "eer"; UsageError for anything else (checked before
    anything is fitted, and on a results file's open-set block)."""
    if rule == "eer":
        return None
    name, eq, value = str(rule).partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if name != "fpr" or not eq or not 0.0 <= rate < 1.0:
        raise UsageError(f"threshold rule {rule!r}: say 'eer' or 'fpr=R' with R in [0, 1) (say fpr=0.05)")
    return rate


def threshold_by_rule(known_scores, unknown_scores, rule: str = "eer") -> float:
    """The open-set threshold from calibration clips of known and unseen systems. `rule`: "eer" (the
    threshold at their equal error rate, where TADA and the MLAAD source-tracing baseline set it; the
    crossing convention is TADA's, see `metrics.eer_and_threshold`) or "fpr=R" (the lowest threshold that calls at most a share R of the known
    calibration clips unknown: the (floor(R n) + 1)-th highest of the n known scores, so that at most
    floor(R n) of them lie above it)."""
    rate = check_threshold_rule(rule)
    if rate is None:
        return eer_and_threshold(known_scores, unknown_scores)[1]
    known = np.sort(np.asarray(known_scores, dtype=np.float64))[::-1]
    if len(known) == 0:
        raise UsageError("threshold rule fpr=R needs known calibration clips")
    return float(known[int(np.floor(rate * len(known)))])


def known_and_unknown(labels, what: str) -> np.ndarray:
    """Which of `labels` name known systems; UsageError unless there are both known and `UNKNOWN` ones."""
    known = np.asarray(labels).astype(str) != UNKNOWN
    if not known.any() or known.all():
        raise UsageError(f"{what} needs clips of known systems and clips labelled {UNKNOWN!r}, "
                         f"got {int(known.sum())} known and {int((~known).sum())} unknown")
    return known


def open_set_report(y_true, closed_pred, scores, threshold: float) -> dict:
    """Open-set scores of one query, as published: `y_true` names each clip's system, `UNKNOWN` for
    systems the support never saw; `closed_pred` the attributor's closed-set answers; `scores` the
    out-of-domain scores, called unknown above `threshold`.

    closed_set: macro F1 and accuracy of the closed-set answers on the clips of known systems;
    open_set: macro F1 with "unknown" as one more class (labels: every class in truth or answer) and
    accuracy, once answers above the threshold are replaced by "unknown"; detection: EER, AUROC and
    FPR95 of known versus unseen clips (`metrics.detection_metrics`), and the two error rates at the
    threshold (false_unknown_rate: known clips called unknown; missed_unknown_rate: unseen clips not)."""
    y_true, closed_pred = np.asarray(y_true).astype(str), np.asarray(closed_pred).astype(str)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(y_true) == len(closed_pred) == len(scores):
        raise UsageError(f"{len(y_true)} labels, {len(closed_pred)} answers and {len(scores)} scores: they must match")
    known = known_and_unknown(y_true, "an open-set query")
    flagged = above_threshold(scores, threshold)
    open_pred = np.where(flagged, UNKNOWN, closed_pred)
    closed_labels = sorted(set(y_true[known]) | set(closed_pred[known]))
    return {
        "closed_set": {"macro_f1": macro_f1(y_true[known], closed_pred[known], labels=closed_labels),
                       "accuracy": accuracy(y_true[known], closed_pred[known]), "n": int(known.sum())},
        "open_set": {"macro_f1": macro_f1(y_true, open_pred, labels=sorted(set(y_true) | set(open_pred))),
                     "accuracy": accuracy(y_true, open_pred), "n": len(y_true)},
        "detection": {**detection_metrics(scores[known], scores[~known]), "threshold": float(threshold),
                      "false_unknown_rate": float(np.mean(flagged[known])),
                      "missed_unknown_rate": float(np.mean(~flagged[~known]))},
    }


def calibration_at_eer(known_scores, unknown_scores) -> dict:
    """`metrics.detection_metrics` of validation clips plus `threshold`, the decision threshold they
    set: their EER threshold (the names of a results file's open-set detection block)."""
    out = detection_metrics(known_scores, unknown_scores)
    return {**out, "threshold": out["eer_threshold"]}


class UnknownDetector:
    def __init__(self, attributor: Attributor, threshold: float | None = None):
        self.attributor = attributor
        self.threshold = threshold
        self.calibration_: dict | None = None

    def calibrate(self, X_known, X_unknown) -> UnknownDetector:
        """Set the threshold at the EER point of known vs unknown validation clips."""
        self.calibration_ = calibration_at_eer(self.attributor.outlier_score(X_known),
                                               self.attributor.outlier_score(X_unknown))
        self.threshold = self.calibration_["threshold"]
        return self

    def calibrate_holding_out(self, make_attributor, X, labels, groups, prompts, **options) -> UnknownDetector:
        """Set the threshold from the support set alone (see `calibrate_holding_out`)."""
        self.calibration_ = calibrate_holding_out(make_attributor, X, labels, groups, prompts, **options)
        self.threshold = self.calibration_["threshold"]
        return self

    def is_unknown_score(self, scores) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("UnknownDetector has no threshold: calibrate it or pass threshold=")
        return above_threshold(scores, self.threshold)

    def is_unknown(self, X) -> np.ndarray:
        return self.is_unknown_score(self.attributor.outlier_score(X))

    def predict(self, X) -> np.ndarray:
        labels = self.attributor.predict(X).astype(object)
        labels[self.is_unknown(X)] = UNKNOWN
        return labels

    def evaluate(self, X_known, X_unknown) -> dict:
        """EER, AUROC and FPR at 95 % TPR on held-out clips, plus the error rates at the set threshold."""
        known = self.attributor.outlier_score(X_known)
        unknown = self.attributor.outlier_score(X_unknown)
        out = detection_metrics(known, unknown)
        out["threshold"] = float(self.threshold)
        out["false_unknown_rate"] = float(np.mean(self.is_unknown_score(known)))
        out["missed_unknown_rate"] = float(np.mean(~self.is_unknown_score(unknown)))
        return out


def prompt_folds(prompts, folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per clip, dealing the distinct prompt ids (sorted, then a seeded permutation)
    into at most `folds` folds, so that every clip of one prompt lands in the same fold."""
    prompts = np.asarray(prompts)
    ids = np.unique(prompts)
    if len(ids) < 2:
        raise UsageError(f"unknown calibration needs clips of at least 2 distinct prompts, got {len(ids)}")
    n_folds = min(int(folds), len(ids))
    if n_folds < 2:
        raise UsageError(f"unknown calibration needs at least 2 prompt folds, got folds={folds}")
    fold_of_id = np.empty(len(ids), dtype=np.int64)
    fold_of_id[np.random.default_rng(seed).permutation(len(ids))] = np.arange(len(ids)) % n_folds
    return fold_of_id[np.searchsorted(ids, prompts)]


def calibrate_holding_out(make_attributor, X, labels, groups, prompts, folds: int = 5, seed: int = 0,
                          level: str = "group") -> dict:
    """Calibrate the unknown threshold from a support set alone, holding out whole groups.

    Each group (`level`, say architecture) in turn plays the unknown generator, and the prompts
    are dealt into folds. For every (group, fold) an attributor from `make_attributor()` is fitted,
    on `labels`, with the other groups' clips of the other folds; it scores the other groups'
    clips of this fold (known) and the held-out group's clips of this fold (unknown). Both speak
    prompts the fitted support never spoke, as a new query does. Pooled, their equal-error point
    is the threshold (TADA's definition). Holding out less than the level the unknown decision is
    about (a checkpoint whose sibling checkpoints stay in) sets the threshold inside the spread of
    one generator's own clips, and known generators come out unknown.

    Returns `calibration_at_eer` of the pooled scores plus the rates at the threshold under the decision
    rule (`false_unknown_rate`: known clips called unknown; `detection_rate`: held-out clips
    called unknown; `held_out`: the detection rate of each held-out value, whose spread says how
    much the rate for a new generator can differ) and `level`, `folds`, `seed`.
    """
    X = np.asarray(X, dtype=np.float32)
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not len(X) == len(labels) == len(groups) == len(prompts):
        raise UsageError(f"{len(X)} vectors, {len(labels)} labels, {len(groups)} {level} values and "
                         f"{len(prompts)} prompt ids: they must match")
    names = np.unique(groups)
    if len(names) < 2:
        raise UsageError(f"unknown calibration holds out one {level} at a time and needs at least 2, "
                         f"got {len(names)} ({', '.join(map(str, names))}); name another level or give a threshold")
    fold = prompt_folds(prompts, folds, seed)
    n_folds = int(fold.max()) + 1
    known_scores, unknown_scores, unknown_of = [], [], []
    for name in names:
        held = groups == name
        for f in range(n_folds):
            fit = ~held & (fold != f)
            known, unknown = ~held & (fold == f), held & (fold == f)
            if not known.any() or not unknown.any():
                continue
            try:
                attributor = make_attributor().fit(X[fit], labels[fit])
            except ValueError as exc:
                raise UsageError(f"unknown calibration, {level} {str(name)!r} held out, prompt fold {f + 1}/{n_folds} "
                                 f"({int(fit.sum())} support clips): {exc}") from None
            known_scores.append(attributor.outlier_score(X[known]))
            unknown_scores.append(attributor.outlier_score(X[unknown]))
            unknown_of.extend([name] * int(unknown.sum()))
    if not known_scores:
        raise UsageError(f"unknown calibration found no prompt fold with clips of both a held-out {level} and "
                         f"the others: the {level}s speak disjoint prompts")
    known, unknown = np.concatenate(known_scores), np.concatenate(unknown_scores)
    out = calibration_at_eer(known, unknown)
    detected, unknown_of = above_threshold(unknown, out["threshold"]), np.array(unknown_of)
    out.update({
        "false_unknown_rate": float(np.mean(above_threshold(known, out["threshold"]))),
        "detection_rate": float(np.mean(detected)),
        "level": level,
        "held_out": {str(n): float(np.mean(detected[unknown_of == n])) for n in np.unique(unknown_of)},
        "folds": n_folds,
        "seed": int(seed),
    })
    return out
