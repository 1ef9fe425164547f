import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.metrics import confusion, detection_metrics, macro_f1, per_class_report
from sourcetrace.attribution.probe import LinearProbeAttributor
from sourcetrace.attribution.unknown import UNKNOWN, UnknownDetector, calibrate_holding_out, prompt_folds
from sourcetrace.core.plugins import ATTRIBUTORS


def blobs(n_classes=6, per_class=40, dim=16, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 3
    X = np.concatenate([c + spread * rng.standard_normal((per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat([f"class-{i}" for i in range(n_classes)], per_class)
    return X, y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_predictions_equal_sklearn(metric, weights):
    X, y = blobs(spread=3.0)  # overlapping classes: many split votes
    Q, _ = blobs(spread=3.0, seed=1)
    ours = KNNAttributor(k=15, metric=metric, weights=weights, chunk_size=37).fit(X, y)
    ref = KNeighborsClassifier(n_neighbors=15, metric=metric, weights=weights, algorithm="brute").fit(X, y)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    np.testing.assert_allclose(ours.predict_scores(Q), ref.predict_proba(Q), atol=1e-6)
    d_ref, _ = ref.kneighbors(Q)
    d, _ = ours.kneighbors(Q)
    np.testing.assert_allclose(d, d_ref, atol=1e-4)


def test_vote_ties_go_to_first_class_and_neighbour_ties_to_lowest_index():
    X = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    y = np.array(["b", "b", "a", "a"])
    knn = KNNAttributor(k=2, metric="euclidean").fit(X, y)
    q = np.array([[1, 1]], np.float32)  # equidistant from all four
    _, idx = knn.kneighbors(q)
    assert idx.tolist() == [[0, 1]]  # the two lowest support indices
    knn4 = KNNAttributor(k=4, metric="euclidean").fit(X, y)
    assert knn4.predict(q).tolist() == ["a"]  # 2-2 vote: first class in sorted order, like sklearn


def test_k_larger_than_support_is_a_clear_error():
    X, y = blobs(n_classes=2, per_class=3)
    with pytest.raises(ValueError, match="larger than the support set"):
        KNNAttributor(k=56).fit(X, y)


def test_rank_lists_candidates_best_first():
    X, y = blobs(n_classes=3, per_class=20, spread=0.2)
    knn = KNNAttributor(k=10).fit(X, y)
    ranked = knn.rank(X[:1])[0]
    assert ranked[0]["label"] == "class-0" and ranked[0]["votes"] == 1.0


def test_macro_f1_counts_a_class_never_predicted_as_zero():
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "a"]  # c never predicted
    f1_a = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert macro_f1(y_true, y_pred) == pytest.approx((f1_a + 1 + 0) / 3)
    # A class absent from the query but named in labels still counts.
    assert macro_f1(["a"], ["a"], labels=["a", "b"]) == pytest.approx(0.5)
    report = {r["label"]: r for r in per_class_report(y_true, y_pred)}
    assert report["c"]["f1"] == 0 and report["c"]["support"] == 1
    labels, matrix = confusion(y_true, y_pred)
    assert labels == ["a", "b", "c"] and matrix.tolist() == [[2, 0, 0], [0, 2, 0], [1, 0, 0]]


def test_detection_metrics_against_hand_computation():
    known = [0.1, 0.2, 0.3, 0.4]
    unknown = [0.35, 0.5, 0.6, 0.7]
    m = detection_metrics(known, unknown)
    assert m["auroc"] == pytest.approx(15 / 16)  # one of 16 pairs inverted (0.35 < 0.4)
    assert m["eer"] == pytest.approx(0.25)
    assert m["fpr95"] == pytest.approx(0.25)  # accept <= 0.4 keeps all known, lets 0.35 in


def test_unknown_detector_flags_an_unseen_class():
    X, y = blobs(n_classes=5, per_class=60, spread=0.5)
    known = y != "class-4"
    support, val = np.arange(len(X)) % 3 != 0, np.arange(len(X)) % 3 == 0
    knn = KNNAttributor(k=10, metric="euclidean").fit(X[known & support], y[known & support])
    det = UnknownDetector(knn).calibrate(X[known & val], X[~known & val])
    assert det.calibration_["eer"] < 0.05
    Q, _ = blobs(n_classes=5, per_class=60, spread=0.5, seed=0)
    pred = det.predict(Q[-60:])
    assert (pred == UNKNOWN).mean() > 0.9


def test_prompt_folds_keep_every_clip_of_a_prompt_together():
    prompts = np.array(["p3", "p1", "p2", "p1", "p0", "p3", "p4"])
    fold = prompt_folds(prompts, folds=3, seed=0)
    assert all(len(set(fold[prompts == p])) == 1 for p in set(prompts))
    assert sorted(set(fold.tolist())) == [0, 1, 2]
    assert prompt_folds(prompts, folds=3, seed=0).tolist() == fold.tolist()
    assert set(prompt_folds(prompts[:2], folds=5).tolist()) == {0, 1}  # no more folds than prompts
    with pytest.raises(ValueError, match="2 distinct prompts"):
        prompt_folds(["p0", "p0"], folds=5)


def hierarchy(n_arch=4, n_ckpt=3, n_prompts=20, seed=0):
    """Architectures far apart, checkpoints of one architecture close together, clips of one
    checkpoint scattered by their prompt: the shape of a generator corpus."""
    rng = np.random.default_rng(seed)
    prompt_offset = rng.standard_normal((n_prompts, 8)) * 0.5
    X, ckpt, arch, prompt = [], [], [], []
    for a in range(n_arch):
        centre = rng.standard_normal(8) * 6
        for c in range(n_ckpt):
            sub = centre + rng.standard_normal(8) * 0.3
            for p in range(n_prompts):
                X.append(sub + prompt_offset[p] + rng.standard_normal(8) * 0.1)
                ckpt.append(f"a{a}/c{c}")
                arch.append(f"a{a}")
                prompt.append(f"p{p:02d}")
    return np.array(X, np.float32), np.array(ckpt), np.array(arch), np.array(prompt)


def test_calibration_holds_out_whole_architectures():
    X, ckpt, arch, prompt = hierarchy()
    make = lambda: KNNAttributor(k=5, metric="euclidean")  # noqa: E731
    by_arch = calibrate_holding_out(make, X, ckpt, arch, prompt, level="architecture")
    by_ckpt = calibrate_holding_out(make, X, ckpt, ckpt, prompt, level="checkpoint")
    assert by_arch["level"] == "architecture" and sorted(by_arch["held_out"]) == ["a0", "a1", "a2", "a3"]
    assert by_arch["folds"] == 5 and by_arch["eer"] < 0.05 and by_arch["detection_rate"] > 0.95
    # A held-out checkpoint's siblings stay in: the threshold falls inside one architecture's spread.
    assert by_ckpt["threshold"] < by_arch["threshold"]
    # Known scores are counted once per other architecture held out; unknown ones once.
    assert by_arch["n_unknown"] == len(X) and by_arch["n_known"] == 3 * len(X)
    det = UnknownDetector(make().fit(X, ckpt)).calibrate_holding_out(make, X, ckpt, arch, prompt, level="architecture")
    assert det.threshold == by_arch["threshold"] and det.calibration_ == by_arch
    with pytest.raises(ValueError, match="needs at least 2, got 1"):
        calibrate_holding_out(make, X, ckpt, np.full(len(X), "a"), prompt, level="architecture")
    with pytest.raises(ValueError, match="a0' held out, prompt fold 1/5.*larger than the support set"):
        calibrate_holding_out(lambda: KNNAttributor(k=200), X, ckpt, arch, prompt, level="architecture")


def test_linear_probe_and_registry():
    X, y = blobs(spread=0.5)
    probe = ATTRIBUTORS["probe"]().fit(X, y)
    assert isinstance(probe, LinearProbeAttributor)
    assert macro_f1(y, probe.predict(X)) > 0.95
    with pytest.raises(ValueError, match="unknown attributor"):
        ATTRIBUTORS["svm"]


def test_bad_inputs_are_refused():
    X, y = blobs()
    with pytest.raises(ValueError, match="labels"):
        KNNAttributor(k=3).fit(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KNNAttributor(k=3).fit(bad, y)
    knn = KNNAttributor(k=3).fit(X, y)
    with pytest.raises(ValueError, match="shape"):
        knn.predict(X[:, :5])
    with pytest.raises(RuntimeError, match="not fitted"):
        KNNAttributor().predict(X)


def test_standardized_knn_equals_sklearn_scaler_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = blobs(spread=3.0)
    X[:, 0] *= 1000  # one dominant dimension, like c0 in cepstral statistics
    Q, _ = blobs(spread=3.0, seed=2)
    Q[:, 0] *= 1000
    ours = KNNAttributor(k=9, metric="euclidean", standardize=True).fit(X, y)
    ref = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=9, algorithm="brute")).fit(X, y)
    np.testing.assert_array_equal(ours.predict(Q), ref.predict(Q))
    plain = KNNAttributor(k=9, metric="euclidean").fit(X, y)
    assert (plain.predict(Q) != ours.predict(Q)).any()


def test_relabel_shares_neighbours_and_equals_a_fresh_fit():
    X, y = blobs(spread=3.0)
    coarse = np.array([label[:-1] + ("a" if int(label[-1]) < 3 else "b") for label in y])
    Q, _ = blobs(spread=3.0, seed=4)
    fine = KNNAttributor(k=11).fit(X, y)
    np.testing.assert_array_equal(fine.relabel(coarse).predict(Q), KNNAttributor(k=11).fit(X, coarse).predict(Q))
    with pytest.raises(ValueError, match="labels for"):
        fine.relabel(coarse[:-1])


def test_macro_f1_is_scikit_learns_bit_for_bit():
    """The benchmark's own count must give the very numbers scikit-learn gives (results files keep
    their bytes): labels in any order, labels never predicted or never true, values outside the labels."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for trial in range(400):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 200))
        names = np.array([f"arch{i % 4}/step-{i:06d}" for i in range(n)])
        y_true = names[rng.integers(0, n, m)]
        y_pred = y_true.copy() if trial % 4 == 0 else names[rng.integers(0, n, m)]
        if trial % 5 == 0:
            y_pred[: m // 3] = UNKNOWN
        labels = sorted(set(y_true) | set(y_pred))
        labels = labels[::-1][: max(1, len(labels) // 2)] if trial % 3 == 0 else labels
        expected = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred, labels) == expected, trial
    assert macro_f1([1, 2, 2], [1, 2, 1]) == f1_score([1, 2, 2], [1, 2, 1], average="macro")
    with pytest.raises(ValueError, match="must be 1-d and of one length"):
        macro_f1(["a", "b"], ["a"])
