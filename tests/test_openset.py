"""Open-set scoring (issue 23, item 3): the metrics against scikit-learn's, every out-of-domain score
against an obvious unseen cluster, the calibration threshold applied to the query, chunking, and
the open-set block through a results file onto the leaderboard."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from sourcetrace.attribution import knn as knn_module
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.metrics import auroc, detection_metrics, eer_and_threshold, fpr_at_tpr, roc_points
from sourcetrace.attribution.ood_scores import OOD_SCORES, build_ood_score
from sourcetrace.attribution.unknown import UNKNOWN, UnknownDetector, open_set_report, threshold_by_rule
from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.openset import run_open_set
from sourcetrace.benchmark.protocol import ClipTable, load_protocol
from sourcetrace.benchmark.results import number_problems
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
from sourcetrace.cli import main
from sourcetrace.core.errors import UsageError

torch.set_num_threads(1)


def score_pairs():
    """(known, unknown) score sets: continuous, heavily tied (few integer values), and tiny."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n_known, n_unknown = rng.integers(3, 400, 2)
        if seed % 3 == 0:
            yield rng.normal(0, 1, n_known), rng.normal(rng.uniform(-1, 2), 1, n_unknown)
        elif seed % 3 == 1:
            yield rng.integers(0, 6, n_known).astype(float), rng.integers(2, 8, n_unknown).astype(float)
        else:
            yield rng.integers(0, 3, 3).astype(float), rng.integers(0, 3, 2).astype(float)


def tada_eer(labels, scores):
    """adrianastan/tada run_ood.py compute_eer, as published (roc_curve's default curve)."""
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    return eer, float(interp1d(fpr, thresholds)(eer))


def test_metrics_equal_scikit_learns_on_random_and_tied_scores():
    for known, unknown in score_pairs():
        y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
        s = np.r_[known, unknown]
        for drop in (False, True):
            for mine, theirs in zip(roc_points(known, unknown, drop), roc_curve(y, s, drop_intermediate=drop)):
                np.testing.assert_array_equal(mine, theirs)
        assert abs(auroc(known, unknown) - roc_auc_score(y, s)) <= 1e-9
        assert abs(eer_and_threshold(known, unknown)[0] - tada_eer(y, s)[0]) <= 1e-9
        for drop in (False, True):  # FPR95: known positive, -score its confidence
            fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=drop)
            assert abs(fpr_at_tpr(known, unknown) - fpr[np.argmax(tpr >= 0.95)]) <= 1e-9


def test_the_eer_threshold_is_tadas_where_the_crossing_segment_is_not_vertical():
    compared = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        known, unknown = rng.normal(0, 1, 300), rng.normal(1.5, 1, 200)
        fpr, tpr, _ = roc_points(known, unknown, drop_intermediate=True)
        j = int(np.argmax((1 - tpr) - fpr <= 0))
        if fpr[j] == fpr[j - 1]:
            continue  # on a vertical segment interp1d(fpr, thresholds) is not a function: TADA's value is arbitrary
        y, s = np.r_[np.zeros(300), np.ones(200)], np.r_[known, unknown]
        assert abs(eer_and_threshold(known, unknown)[1] - tada_eer(y, s)[1]) <= 1e-9
        compared += 1
    assert compared >= 10


def clusters(seed=0, dim=16, per_class=60):
    """Five known systems and two unseen ones (one for calibration, one for the query), far apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (7, dim))
    def draw(c, n):
        return (centres[c] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    X = np.concatenate([draw(c, per_class) for c in range(5)]
                       + [draw(c, per_class // 2) for c in range(5)] + [draw(5, per_class)]
                       + [draw(c, per_class // 2) for c in range(5)] + [draw(6, per_class)])
    known = [f"sys{c}" for c in range(5)]
    labels = np.array([s for s in known for _ in range(per_class)]
                      + [s for s in known for _ in range(per_class // 2)] + [UNKNOWN] * per_class
                      + [s for s in known for _ in range(per_class // 2)] + [UNKNOWN] * per_class)
    n_support, n_side = 5 * per_class, 5 * (per_class // 2) + per_class
    support = np.arange(n_support)
    calibration = np.arange(n_support, n_support + n_side)
    query = np.arange(n_support + n_side, n_support + 2 * n_side)
    return X, labels, support, calibration, query


@pytest.mark.parametrize("name", sorted(OOD_SCORES))
def test_every_score_separates_an_obvious_unseen_cluster(name):
    X, labels, support, _, query = clusters()
    score = build_ood_score(name).fit(X[support], labels[support])
    s = score.score(X[query])
    unknown = labels[query] == UNKNOWN
    assert s.shape == (len(query),) and np.isfinite(s).all()
    assert auroc(s[~unknown], s[unknown]) > 0.99
    assert s[unknown].mean() > s[~unknown].mean()  # the sign convention: higher = more unknown


def test_the_calibration_eer_threshold_applied_to_the_query_gives_the_independent_f1():
    X, labels, support, calibration, query = clusters(seed=3, per_class=40)
    X[query] += np.random.default_rng(1).normal(0, 1.5, X[query].shape).astype(np.float32)  # errors to count
    ood = build_ood_score("knn-distance").fit(X[support], labels[support])
    cal, q = ood.score(X[calibration]), ood.score(X[query])
    cal_unknown = labels[calibration] == UNKNOWN
    threshold = threshold_by_rule(cal[~cal_unknown], cal[cal_unknown], "eer")
    _, tada_threshold = tada_eer(cal_unknown.astype(int), cal)
    assert abs(threshold - tada_threshold) <= 1e-9
    closed = KNNAttributor(k=5).fit(X[support], labels[support]).predict(X[query])
    report = open_set_report(labels[query], closed, q, threshold)
    # Independently: the rule as TADA's predict() writes it, and scikit-learn's macro F1.
    predicted = np.where(q > tada_threshold, UNKNOWN, closed)
    expected = f1_score(labels[query], predicted, average="macro", zero_division=0)
    assert report["open_set"]["macro_f1"] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 1.0
    known = labels[query] != UNKNOWN
    assert report["closed_set"]["macro_f1"] == pytest.approx(
        f1_score(labels[query][known], closed[known], average="macro", zero_division=0), abs=1e-12)
    assert report["closed_set"]["accuracy"] == pytest.approx(np.mean(labels[query][known] == closed[known]))


def test_a_threshold_at_a_stated_fpr_calls_at_most_that_share_of_known_clips_unknown():
    rng = np.random.default_rng(0)
    known = rng.integers(0, 20, 500).astype(float)  # ties at every value
    for rate in (0.0, 0.01, 0.05, 0.3):
        threshold = threshold_by_rule(known, [0.0], f"fpr={rate}")
        assert np.sum(known > threshold) <= np.floor(rate * len(known))
        assert np.sum(known >= threshold) > np.floor(rate * len(known))  # and no stricter threshold than needed
    with pytest.raises(UsageError, match="fpr=R"):
        threshold_by_rule(known, [0.0], "tpr=0.95")


def test_chunked_scores_equal_unchunked_ones(monkeypatch):
    X, labels, support, _, query = clusters(seed=5)
    for name in sorted(OOD_SCORES):
        whole = build_ood_score(name).fit(X[support], labels[support]).score(X[query])
        blocks = build_ood_score(f"{name}:block_rows=7").fit(X[support], labels[support]).score(X[query])
        np.testing.assert_allclose(blocks, whole, rtol=1e-6, atol=1e-6, err_msg=name)
    knn = KNNAttributor(k=4, metric="euclidean").fit(X[support], labels[support])
    dist, idx = knn.kneighbors(X[query])
    monkeypatch.setattr(knn_module, "CHUNK_BYTES", 4 * len(support) * 3)  # 3 query rows at a time
    assert knn.chunk_rows() == 3
    dist3, idx3 = knn.kneighbors(X[query])
    np.testing.assert_array_equal(idx3, idx)
    np.testing.assert_allclose(dist3, dist, rtol=1e-6)


def test_bad_open_set_inputs_are_refused():
    X, labels, support, calibration, query = clusters(per_class=10)
    spec = AttributorSpec.parse("knn:k=3")
    with pytest.raises(UsageError, match="support holds known systems only"):
        run_open_set(X, labels, np.r_[support, query[-1]], calibration, query[:-1], spec)
    with pytest.raises(UsageError, match="disjoint"):
        run_open_set(X, labels, support, calibration, np.r_[query, support[0]], spec)
    renamed = labels.copy()
    renamed[query[-1]] = "sys9"
    with pytest.raises(UsageError, match="not in the support"):
        run_open_set(X, renamed, support, calibration, query, spec)
    with pytest.raises(UsageError, match="bad parameter"):
        build_ood_score("mahalanobis:k=3")
    with pytest.raises(UsageError, match="unknown out-of-domain score"):
        build_ood_score("odin")


@pytest.fixture(scope="module")
def open_set_result():
    """A table1-01 result of synthetic vectors carrying an open-set block (MLAAD's), as JSON gives it back."""
    X, labels, support, calibration, query = clusters(per_class=30)
    spec = AttributorSpec.parse("knn:k=3")
    block = run_open_set(X, labels, support, calibration, query, spec, dataset="mlaad",
                         ood_scores=("knn-distance", "cosine-centroid"))
    rows = study_rows(n_prompts=10, vocoder_variants=False)
    protocol = load_protocol("table1-01-baseline")
    run = run_protocol(protocol, ClipTable.from_records(rows), clustered_vectors(rows, dim=8), spec, seeds=[0])
    result = make_result(protocol, run, spec, "synthetic", {"kind": "synthetic"}, "f" * 64,
                         {"path": "synthetic", "sha256": "a" * 64, "n_clips": len(rows)}, "test", open_set=block)
    return json.loads(json.dumps(result))


def test_the_open_set_block_reaches_the_results_file_and_the_leaderboard(tmp_path, open_set_result):
    result = copy.deepcopy(open_set_result)
    block = result["open_set"]
    assert set(block["scores"]) == {"knn-distance(k=1,metric=euclidean,statistic=mean)", "cosine-centroid"}
    assert block["closed_set"]["macro_f1"] == 1.0  # far clusters
    for entry in block["scores"].values():
        assert entry["detection"]["auroc"] > 0.99 and entry["calibration"]["n_unknown"] == 30
    assert number_problems(result) == []
    (tmp_path / "r.json").write_text(json.dumps(result))
    build_leaderboard([tmp_path / "r.json"], tmp_path / "site")
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "## Open set" in md and "| cosine-centroid | eer | 1.000 |" in md
    assert "63% EER with an F1-score of 0.31" in md and "published, other split" in md  # MLAAD's references
    assert "86.83" not in md  # ADD 2023's reference belongs to another set
    page = (tmp_path / "site" / "index.html").read_text()
    assert 'id="open-set"' in page and 'id="open-set-published"' in page
    result["open_set"]["scores"]["cosine-centroid"]["detection"]["eer"] = 1.5
    assert number_problems(result) == ["open_set.scores.cosine-centroid.detection.eer must be a number in 0..1, not 1.5"]
    result["open_set"]["scores"]["cosine-centroid"]["detection"].update(eer=0.5, threshold=float("nan"))
    assert number_problems(result) == ["open_set.scores.cosine-centroid.detection.threshold must be a number, not nan"]


def test_a_calibration_of_known_systems_only_takes_a_stated_fpr(open_set_result):
    X, labels, support, calibration, query = clusters(per_class=20)
    spec = AttributorSpec.parse("knn:k=3")
    known_only = calibration[labels[calibration] != UNKNOWN]  # ASVspoof 2019 LA's dev list: A01-A06 only
    with pytest.raises(UsageError, match="by the rule 'eer' needs clips of known systems and clips labelled"):
        run_open_set(X, labels, support, known_only, query, spec, ood_scores=("cosine-centroid",))
    block = run_open_set(X, labels, support, known_only, query, spec, ood_scores=("cosine-centroid",), rule="fpr=0.1")
    entry = block["scores"]["cosine-centroid"]
    assert entry["calibration"]["eer"] is None and entry["calibration"]["n_unknown"] == 0
    cal = build_ood_score("cosine-centroid").fit(X[support], labels[support]).score(X[known_only])
    assert np.mean(cal > entry["detection"]["threshold"]) <= 0.1
    assert number_problems({**open_set_result, "open_set": json.loads(json.dumps(block))}) == []  # publishable


def _parent(result, path):
    """(the table holding the last key of `path`, that key): `path` is keys under open_set joined by "/"."""
    *parents, last = path.split("/")
    where = result["open_set"]
    for key in parents:
        where = where[key]
    return where, last


def _set(path, value):
    def change(result):
        where, key = _parent(result, path)
        where[key] = value
    return change


def _drop(path):
    def change(result):
        where, key = _parent(result, path)
        del where[key]
    return change


KNN = "knn-distance(k=1,metric=euclidean,statistic=mean)"


@pytest.mark.parametrize("change, problem", [
    (_set("scores/cosine-centroid/detection", {}), "missing required key 'open_set.scores.cosine-centroid.detection.eer'"),
    (_set("dataset", ["mlaad"]), "open_set.dataset must be a string, not ['mlaad']"),
    (_drop("closed_set/macro_f1"), "missing required key 'open_set.closed_set.macro_f1'"),
    (_set(f"scores/{KNN}/open_set/accuracy", "0.9"), f"open_set.scores.{KNN}.open_set.accuracy must be a number in 0..1"),
    (_set(f"scores/{KNN}/detection/fpr95", True), f"open_set.scores.{KNN}.detection.fpr95 must be a number in 0..1"),
    (_set(f"scores/{KNN}/detection/threshold", "high"), f"open_set.scores.{KNN}.detection.threshold must be a number, not 'high'"),
    (_set(f"scores/{KNN}/calibration", None), f"open_set.scores.{KNN}.calibration must be a table"),
    (_set("scores", {}), "open_set.scores must be a non-empty table"),
    (_set("threshold_rule", "fpr=5"), "open_set.threshold_rule: threshold rule 'fpr=5'"),
    (_set("n_query", -3), "open_set.n_query must be an integer 1.."),
    (lambda r: r.update(open_set=[]), "open_set must be a table"),
], ids=["detection-empty", "dataset-list", "closed-set-no-f1", "rate-text", "rate-bool", "threshold-text",
        "calibration-null", "no-scores", "bad-rule", "negative-count", "block-list"])
def test_a_hostile_open_set_block_is_refused_by_name_not_a_crash(tmp_path, capsys, open_set_result, change, problem):
    """Each passed validation and then crashed the leaderboard (exit 70) before the block was checked whole;
    `leaderboard render` and a board's `add` refuse it by the one check (number_problems)."""
    result = copy.deepcopy(open_set_result)
    change(result)
    assert any(problem in p for p in number_problems(result)), number_problems(result)
    (tmp_path / "r.json").write_text(json.dumps(result))
    assert main(["leaderboard", "render", str(tmp_path / "r.json"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "r.json: refused: " in err and problem in err
    assert not (tmp_path / "site").exists()
    assert main(["leaderboard", "init", str(tmp_path / "board"), "--corpus-sha256", result["corpus"]["sha256"],
                 "--protocols", result["protocol"]["name"]]) == 0
    assert main(["leaderboard", "add", str(tmp_path / "r.json"), "--board", str(tmp_path / "board"),
                 "--submitter", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "r.json: refused: " in err and problem in err


def test_calibration_rows_in_the_query_are_refused():
    """A threshold tuned on the query's own clips would make the open-set numbers optimistic."""
    X, labels, support, calibration, query = clusters(per_class=10)
    spec = AttributorSpec.parse("knn:k=3")
    with pytest.raises(UsageError, match="calibration shares 35 rows with query"):
        run_open_set(X, labels, support, calibration, calibration, spec)
    with pytest.raises(UsageError, match="calibration shares 1 rows with query"):
        run_open_set(X, labels, support, calibration, np.r_[query, calibration[0]], spec)


def test_a_bad_rule_or_score_is_refused_before_anything_is_fitted():
    """The attributor below cannot be fitted (k above the support's 50 clips): each refusal must come first."""
    X, labels, support, calibration, query = clusters(per_class=10)
    unfittable = AttributorSpec.parse("knn:k=1000")
    with pytest.raises(UsageError, match="k=1000 is larger than the support"):
        run_open_set(X, labels, support, calibration, query, unfittable, ood_scores=("knn-distance",))
    with pytest.raises(UsageError, match="threshold rule 'fpr=5'"):
        run_open_set(X, labels, support, calibration, query, unfittable, rule="fpr=5")
    with pytest.raises(UsageError, match="unknown out-of-domain score 'odin'"):
        run_open_set(X, labels, support, calibration, query, unfittable, ood_scores=("knn-distance", "odin"))
    with pytest.raises(UsageError, match="'energy:C=-1'"):
        run_open_set(X, labels, support, calibration, query, unfittable, ood_scores=("knn-distance", "energy:C=-1"))


def test_two_specs_of_one_score_are_refused_not_merged():
    X, labels, support, calibration, query = clusters(per_class=10)
    spec = AttributorSpec.parse("knn:k=3")
    with pytest.raises(UsageError, match="'knn-distance' and 'knn-distance:k=1' are the same score"):
        run_open_set(X, labels, support, calibration, query, spec, ood_scores=("knn-distance", "knn-distance:k=1"))
    block = run_open_set(X, labels, support, calibration, query, spec, ood_scores=("knn-distance", "knn-distance:k=2"))
    assert len(block["scores"]) == 2


@pytest.mark.parametrize("text, problem", [
    ("energy:C=-1", "C (inverse regularisation strength) must be a positive number"),
    ("max-logit:C=0", "must be a positive number"),
    ("max-logit:max_iter=0", "max_iter must be a positive integer"),
    ("energy:seed=-1", "seed must be an integer in 0..4294967295"),
    ("knn-distance:k=0", "k must be a positive integer"),
    ("knn-distance:metric=manhattan", "metric must be one of"),
    ("energy:temperature=0", "temperature must be positive"),
])
def test_every_score_parameter_is_checked_when_the_score_is_built(text, problem):
    """Not by scikit-learn (InvalidParameterError) or the kNN when fitted: a UsageError naming the spec."""
    with pytest.raises(UsageError, match=re.escape(f"out-of-domain score {text!r}: ") + ".*" + re.escape(problem)):
        build_ood_score(text)


def test_the_calibration_of_unknown_detection_and_the_open_set_block_share_their_names():
    """One set of names (a results file's open-set detection block): eer, eer_threshold, auroc, fpr95."""
    X, labels, support, calibration, query = clusters(per_class=20)
    knn = KNNAttributor(k=3, metric="euclidean").fit(X[support], labels[support])
    cal_known = labels[calibration] != UNKNOWN
    detector = UnknownDetector(knn).calibrate(X[calibration][cal_known], X[calibration][~cal_known])
    scores = knn.outlier_score(X[calibration])
    expected = detection_metrics(scores[cal_known], scores[~cal_known])
    assert detector.calibration_ == {**expected, "threshold": expected["eer_threshold"]}
    block = run_open_set(X, labels, support, calibration, query, AttributorSpec.parse("knn:k=3"), ood_scores=("knn-distance",))
    detection = next(iter(block["scores"].values()))["detection"]
    assert set(expected) <= set(detection)
    assert set(detector.evaluate(X[query][labels[query] != UNKNOWN], X[query][labels[query] == UNKNOWN])) == set(detection)


def test_mahalanobis_is_the_shrunk_class_conditional_distance_with_sklearns_ledoit_wolf():
    X, labels, support, _, query = clusters(seed=2, dim=12, per_class=40)
    Xs, ys = X[support].astype(np.float64), labels[support]
    names, codes = np.unique(ys, return_inverse=True)
    means = np.stack([Xs[codes == c].mean(0) for c in range(len(names))])
    centred = Xs - means[codes]
    score = build_ood_score("mahalanobis:block_rows=50").fit(X[support], ys)
    assert score.shrinkage_ == pytest.approx(ledoit_wolf_shrinkage(centred, assume_centered=True), rel=1e-9)
    cov = centred.T @ centred / len(Xs)
    a = score.shrinkage_
    precision = np.linalg.inv((1 - a) * cov + a * np.trace(cov) / len(cov) * np.eye(len(cov)))
    diff = X[query].astype(np.float64)[:, None, :] - means[None]
    expected = np.einsum("qcd,de,qce->qc", diff, precision, diff).min(1)
    np.testing.assert_allclose(score.score(X[query]), expected, rtol=1e-4)
    fixed = build_ood_score("mahalanobis:shrinkage=0.25").fit(X[support], ys)
    assert fixed.shrinkage_ == 0.25 and fixed.id == "mahalanobis(shrinkage=0.25)"
