"""Open-set scoring as the published source-tracing results report it, on given support /
calibration / query rows (an official split: support = the set's train list, calibration = dev,
query = eval), with systems the support never saw labelled `unknown` in calibration and query.

The attributor, fitted on the support, answers every query clip (closed set); each out-of-domain
score (`attribution.ood_scores`), fitted on the same support, scores calibration and query; its
threshold is set on the calibration clips (`unknown.threshold_by_rule`: at their EER, or at a stated
share of known clips called unknown) and applied unchanged to the query (`unknown.open_set_report`).

`protocol_open_set` does this for an open-set protocol (`Protocol.open_set`) in `sourcetrace bench`.
Its default out-of-domain scores are all five: the distance scores need only the support vectors, and
energy / max-logit fit their own linear probe on the same support whatever the attributor is (kNN
included); a probe fits wherever an attributor does (a support of two systems or more: every
attributor and score refuses fewer), so no attributor rules them out. The probe is their cost (a
logistic regression on the whole support); a protocol's `ood_scores` names fewer where that matters.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from sourcetrace.attribution.metrics import eer_and_threshold
from sourcetrace.attribution.ood_scores import BLOCK_ROWS, OODScore, build_ood_score
from sourcetrace.attribution.unknown import (
    UNKNOWN,
    check_threshold_rule,
    known_and_unknown,
    open_set_report,
    threshold_by_rule,
)
from sourcetrace.benchmark.protocol import ClipTable, Protocol, build_splits
from sourcetrace.benchmark.runner import AttributorSpec, build_on_device
from sourcetrace.core.errors import UsageError

DEFAULT_OOD_SCORES = ("knn-distance", "mahalanobis", "cosine-centroid", "energy", "max-logit")


def _rows(name: str, rows, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer) or len(rows) == 0:
        raise UsageError(f"open-set {name} rows must be a non-empty list of row numbers")
    if rows.min() < 0 or rows.max() >= n:
        raise UsageError(f"open-set {name} rows must lie in 0..{n - 1} (the feature matrix's rows)")
    return rows


def in_blocks(answer, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`answer(X[rows])`, gathered BLOCK_ROWS rows at a time: no copy of a whole split's vectors
    (ASVspoof 5's eval: 2.6 GiB), whatever its size; X may be a memory-mapped .npy."""
    return np.concatenate([answer(X[rows[start: start + BLOCK_ROWS]]) for start in range(0, len(rows), BLOCK_ROWS)])


def run_open_set(X: np.ndarray, labels, support, calibration, query, spec: AttributorSpec,
                 ood_scores=DEFAULT_OOD_SCORES, rule: str = "eer", device: str = "cpu", dataset: str | None = None,
                 query_X: np.ndarray | None = None) -> dict:
    """The `open_set` block of a results file. `labels`: the system of every row of `X`, `unknown`
    for systems outside the support; `support` / `calibration` / `query`: row numbers. `ood_scores`:
    specs for `ood_scores.build_ood_score`. `dataset`: the set's name (a `corpus import --format`), which
    picks the published reference rows the leaderboard shows beside the result (reference/open-set.toml).
    `query_X`: the query's vectors from this matrix (a laundered copy, same rows); support and
    calibration stay X's, so the threshold is the clean calibration's."""
    labels = np.asarray(labels).astype(str)
    splits = {name: _rows(name, rows, len(X)) for name, rows in
              (("support", support), ("calibration", calibration), ("query", query))}
    support, calibration, query = splits.values()
    if (labels[support] == UNKNOWN).any():
        raise UsageError(f"open-set support rows include clips labelled {UNKNOWN!r}: the support holds known systems only")
    for (name, rows), (other, other_rows) in combinations(splits.items(), 2):
        shared = len(np.intersect1d(rows, other_rows))
        if shared:  # calibration rows in the query: the threshold would be tuned on the clips it is scored on
            raise UsageError(f"open-set {name} shares {shared} rows with {other}: support, calibration and query "
                             "must be disjoint")
    unseen_in_support = sorted(set(labels[np.r_[calibration, query]]) - set(labels[support]) - {UNKNOWN})
    if unseen_in_support:
        raise UsageError(f"calibration/query systems {', '.join(unseen_in_support[:5])} are not in the support and not "
                         f"labelled {UNKNOWN!r}: label systems outside the support {UNKNOWN!r}")
    check_threshold_rule(rule)
    cal_known = labels[calibration] != UNKNOWN
    problem = calibration_problem(int(cal_known.sum()), int((~cal_known).sum()), rule)
    if problem:
        raise UsageError(problem)
    known_and_unknown(labels[query], "open-set query")
    scores = build_ood_scores(ood_scores)
    Xs, ys = X[support], labels[support]
    attributor = build_on_device(spec, device).fit(Xs, ys)
    Xq = X if query_X is None else query_X
    closed_pred = in_blocks(attributor.predict, Xq, query)
    by_score = {}
    for ood in scores:
        ood.fit(Xs, ys)
        cal = in_blocks(ood.score, X, calibration)
        threshold = threshold_by_rule(cal[cal_known], cal[~cal_known], rule)
        report = open_set_report(labels[query], closed_pred, in_blocks(ood.score, Xq, query), threshold)
        cal_eer = eer_and_threshold(cal[cal_known], cal[~cal_known])[0] if (~cal_known).any() else None
        report["calibration"] = {"eer": cal_eer, "threshold": threshold,
                                 "n_known": int(cal_known.sum()), "n_unknown": int((~cal_known).sum())}
        by_score[ood.id] = report
    closed = next(iter(by_score.values()))["closed_set"]
    return {"dataset": dataset, "threshold_rule": rule, "unknown_label": UNKNOWN, "closed_set": closed,
            "n_support": int(len(support)), "n_calibration": int(len(calibration)), "n_query": int(len(query)),
            "scores": {name: {k: v for k, v in r.items() if k != "closed_set"} for name, r in by_score.items()}}


def build_ood_scores(specs) -> list[OODScore]:
    """Every out-of-domain score of `specs`, unfitted: each spec checked, and two naming one score (the
    same name and parameters, defaults spelled out or not) refused, as their results would share one key."""
    if not specs:
        raise UsageError("open-set scoring needs at least one out-of-domain score")
    scores = [build_ood_score(text) for text in specs]
    first_spec: dict[str, str] = {}
    for text, score in zip(specs, scores):
        if score.id in first_spec:
            raise UsageError(f"out-of-domain scores {first_spec[score.id]!r} and {text!r} are the same score "
                             f"({score.id}): give each once")
        first_spec[score.id] = text
    return scores


def calibration_problem(n_known: int, n_unknown: int, rule: str) -> str:
    """Why calibration clips cannot fix a threshold by `rule` ("" when they can): every rule needs
    known clips; the EER also needs clips of unseen systems."""
    if n_known and (n_unknown or rule != "eer"):
        return ""
    return (f"open-set calibration by the rule {rule!r} needs clips of known systems"
            + (f" and clips labelled {UNKNOWN!r}" if rule == "eer" else "")
            + f", got {n_known} known and {n_unknown} unknown")


def protocol_open_set(protocol: Protocol, table: ClipTable, X: np.ndarray, spec: AttributorSpec, seed: int,
                      usable: np.ndarray | None = None, device: str = "cpu",
                      query_X: np.ndarray | None = None) -> tuple[dict | None, str]:
    """(the `open_set` block, "") of an open-set protocol's split at its first level (a set's system),
    or (None, why not) where the set's lists cannot give one: a query or calibration without clips of
    known systems (ASVspoof 5: every dev and eval system is unseen), or without unseen ones. The lists
    are the same for every seed: one block, from `seed`'s split."""
    [split] = build_splits(protocol, table, [seed], usable=usable)
    level = protocol.levels[0]
    labels = table.labels(level).astype(object)
    query, calibration = split.truth(table, level), split.truth(table, level, "calibration")
    labels[split.query], labels[split.calibration] = query, calibration
    unseen = int((query == UNKNOWN).sum())
    if not len(query) - unseen or not unseen:
        return None, (f"the query holds {len(query) - unseen} clips of known systems and {unseen} of unseen ones: "
                      "known versus unseen needs both")
    why = calibration_problem(int((calibration != UNKNOWN).sum()), int((calibration == UNKNOWN).sum()), protocol.threshold)
    if why:
        return None, why
    block = run_open_set(X, labels, split.support, split.calibration, split.query, spec,
                         ood_scores=protocol.ood_scores or DEFAULT_OOD_SCORES, rule=protocol.threshold, device=device,
                         dataset=protocol.dataset or None, query_X=query_X)
    return {**block, "level": level}, ""
