"""The protocol machinery against independent computations on corpora of known structure."""

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier

from sourcetrace.benchmark.protocol import (
    ClipTable,
    ProtocolError,
    UnsatisfiableProtocol,
    build_splits,
    builtin_protocols,
    checkpoint_role,
    load_protocol,
    load_suite,
    parse_protocol,
)
from sourcetrace.benchmark.runner import AttributorSpec, run_protocol
from sourcetrace.benchmark.splits import split_prompts
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows


@pytest.fixture(scope="module")
def study():
    rows = study_rows(n_prompts=30)
    return rows, ClipTable.from_records(rows), clustered_vectors(rows, dim=24)


def test_roles_from_checkpoint_names():
    assert [checkpoint_role(c) for c in ("vits/pretrained", "vits/step-050000", "vits/zero-init-s2", "vits/ft-9136",
                                         "vits/best")] == ["pretrained", "scheduled", "zero-init", "finetuned", "other"]


def test_split_fractions_and_determinism():
    parts = split_prompts([f"p{i}" for i in range(600)], seed=1)
    assert [len(parts[k]) for k in ("support", "validation", "query")] == [420, 60, 120]
    assert parts == split_prompts([f"p{i}" for i in reversed(range(600))], seed=1)  # order of ids is irrelevant
    assert parts != split_prompts([f"p{i}" for i in range(600)], seed=2)
    assert not set(parts["support"]) & set(parts["query"])


def test_table1_suite_is_twelve_valid_protocols():
    suite = load_suite("table1")
    assert [p.table1_row for p in suite] == list(range(1, 13))
    ood = {p.table1_row for p in suite if p.disjoint_checkpoints}
    assert ood == {2, 3, 4, 9, 10, 12}
    assert all(p.levels == ("architecture",) for p in suite if p.disjoint_checkpoints)
    assert {"indomain", "mixed-prompts", "holdout"} <= set(builtin_protocols())


def test_baseline_equals_an_independent_sklearn_computation(study):
    rows, table, X = study
    protocol = load_protocol("table1-01-baseline")
    run = run_protocol(protocol, table, X, AttributorSpec.parse("knn:k=7"), seeds=[0, 1])
    arch = np.array([r.architecture for r in rows])
    ckpt = np.array([r.checkpoint for r in rows])
    prompt = np.array([r.prompt_id for r in rows])
    swapped = np.array([r.vocoder_swapped for r in rows])
    trained = np.array([c.endswith("/pretrained") or "/step-" in c for c in ckpt])
    expected = {"checkpoint": [], "architecture": []}
    for seed in (0, 1):
        part = split_prompts(sorted(set(prompt)), seed)
        s = trained & ~swapped & np.isin(prompt, part["support"])
        q = trained & ~swapped & np.isin(prompt, part["query"])
        assert s.sum() == 40 * 21 and q.sum() == 40 * 6  # 40 classes, 30 prompts -> 21 / 3 / 6
        for level, y in (("checkpoint", ckpt), ("architecture", arch)):
            pred = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute").fit(X[s], y[s]).predict(X[q])
            expected[level].append(f1_score(y[q], pred, labels=np.unique(y[s]), average="macro"))
    for level in ("checkpoint", "architecture"):
        got = [e["macro_f1"] for e in run["levels"][level]["per_seed"]]
        np.testing.assert_allclose(got, expected[level], atol=1e-12)
        assert run["levels"][level]["mean"] == pytest.approx(np.mean(expected[level]))
        assert run["levels"][level]["std"] == pytest.approx(np.std(expected[level]))
    assert len(run["levels"]["checkpoint"]["confusion"]["labels"]) == 40
    assert np.sum(run["levels"]["checkpoint"]["confusion"]["matrix"]) == 2 * 40 * 6
    assert run["levels"]["architecture"]["mean"] > run["levels"]["checkpoint"]["mean"]


def test_ood_protocols_never_share_checkpoints(study):
    _, table, _ = study
    for name in ("table1-02-ood-pretrained", "table1-03-ood-three-steps", "table1-04-ood-five-random",
                 "table1-09-speaker-pretrained-only", "table1-10-speaker-baseline-support", "table1-12-zero-init-to-trained"):
        for split in build_splits(load_protocol(name), table, [0, 1]):
            assert not set(split.support_checkpoints) & set(split.query_checkpoints)
            assert not set(table.prompt_id[split.support]) & set(table.prompt_id[split.query])
    three = build_splits(load_protocol("table1-03-ood-three-steps"), table, [0])[0]
    assert [c for c in three.support_checkpoints if c.startswith("vits/")] == [
        "vits/pretrained", "vits/step-050000", "vits/step-250000", "vits/step-450000"]
    assert len(three.query_checkpoints) == 4 * 6
    five = {s.seed: s for s in build_splits(load_protocol("table1-04-ood-five-random"), table, [0, 1, 0])}
    assert len(five[0].support_checkpoints) == 4 * 6 and len(five[0].query_checkpoints) == 4 * 4
    assert five[0].support_checkpoints != five[1].support_checkpoints  # drawn per seed
    again = build_splits(load_protocol("table1-04-ood-five-random"), table, [0])[0]
    assert again.support_checkpoints == five[0].support_checkpoints  # and reproducibly


def test_mixed_prompts_give_each_class_its_own_partition(study):
    _, table, _ = study
    split = build_splits(load_protocol("table1-05-mixed-prompts"), table, [0])[0]
    support_prompts = {c: set(table.prompt_id[split.support][table.checkpoint[split.support] == c]) for c in split.support_checkpoints}
    query_prompts = {c: set(table.prompt_id[split.query][table.checkpoint[split.query] == c]) for c in split.query_checkpoints}
    a, b = "fastpitch/pretrained", "vits/step-050000"
    assert not support_prompts[a] & query_prompts[a]  # never within a class
    assert support_prompts[a] != support_prompts[b]
    assert support_prompts[a] & query_prompts[b]  # across classes prompts do cross


def test_vocoder_conditions(study):
    _, table, _ = study
    same = build_splits(load_protocol("table1-06-same-vocoder"), table, [0])
    assert [s.variant for s in same] == ["hifigan-fastpitch", "hifigan-gradtts", "hifigan-matcha"]
    for s in same:
        vocoders = set(table.vocoder[s.support]) | set(table.vocoder[s.query])
        assert vocoders == {s.variant, "internal"}
    mixed = build_splits(load_protocol("table1-07-mixed-vocoder"), table, [0])[0]
    assert not table.swapped[mixed.support].any()
    mel_query = mixed.query[table.architecture[mixed.query] != "vits"]
    assert table.swapped[mel_query].all()
    # Its unbalanced query is declared in the protocol file; without the declaration the check fires.
    text = load_protocol("table1-07-mixed-vocoder").source
    from importlib import resources
    raw = resources.files("sourcetrace.benchmark").joinpath(text).read_text().replace("balance_query = false", "")
    with pytest.raises(UnsatisfiableProtocol, match="query classes unbalanced"):
        build_splits(parse_protocol(raw, "strict-mixed"), table, [0])


def test_a_corpus_missing_pieces_fails_with_the_list(study):
    rows, _, _ = study
    gaps = [r for r in rows if r.checkpoint != "vits/pretrained" and r.clip_id != "matcha/step-100000/LJ-0003"]
    table = ClipTable.from_records(gaps)
    with pytest.raises(UnsatisfiableProtocol) as err:
        build_splits(load_protocol("table1-01-baseline"), table, [0, 1, 2])
    text = str(err.value)
    assert "architecture 'vits' has no pretrained checkpoint" in text
    with pytest.raises(UnsatisfiableProtocol, match=r"matcha/step-100000' lacks 1 prompt"):
        build_splits(load_protocol("table1-01-baseline"), ClipTable.from_records(
            [r for r in rows if r.clip_id != "matcha/step-100000/LJ-0003"]), [0, 1, 2])
    no_swaps = ClipTable.from_records([r for r in rows if not r.vocoder_swapped])
    with pytest.raises(UnsatisfiableProtocol, match="swapped vocoders"):
        build_splits(load_protocol("table1-06-same-vocoder"), no_swaps, [0])


def test_unusable_clips_count_as_missing(study):
    rows, table, _ = study
    usable = np.ones(len(table), bool)
    usable[0] = False
    with pytest.raises(UnsatisfiableProtocol, match=rows[0].checkpoint):
        build_splits(load_protocol("table1-08-speaker-finetuned"), table, [0, 1, 2], usable=usable)


def test_holdout_protocol(study):
    _, table, _ = study
    protocol = load_protocol("holdout")
    with pytest.raises(ProtocolError, match="--holdout"):
        build_splits(protocol, table, [0])
    split = build_splits(protocol, table, [0], holdout=["vits/step-500000", "matcha/ft-9136"])[0]
    assert split.query_checkpoints == ["matcha/ft-9136", "vits/step-500000"]
    assert not {"matcha/ft-9136", "vits/step-500000"} & set(split.support_checkpoints)
    with pytest.raises(UnsatisfiableProtocol, match="not in the corpus"):
        build_splits(protocol, table, [0], holdout=["nope/x"])


def test_bad_protocol_files_are_refused_with_the_reason():
    good = 'title="t"\nversion=1\nprompts="disjoint"\nvocoder="default"\nlevels=["architecture"]\nsupport={roles=["all"]}\nquery={roles=["all"]}\n'
    assert parse_protocol(good, "x").levels == ("architecture",)
    for bad, message in [(good.replace('"disjoint"', '"shuffled"'), "prompts must be"),
                         (good.replace('roles=["all"]}\nquery', 'roles=["best"]}\nquery'), "unknown role"),
                         (good + "extra=1\n", "unknown key"),
                         (good.replace('levels=["architecture"]', 'levels=["checkpoint"]') + 'checkpoints="disjoint"\n', "only the architecture"),
                         ("title=", "not valid TOML")]:
        with pytest.raises(ProtocolError, match=message):
            parse_protocol(bad, "x", "x.toml")


def test_full_table1_suite_runs_and_orders_as_the_study(study):
    _, table, X = study
    spec = AttributorSpec.parse("knn:k=5")
    f1 = {}
    for protocol in load_suite("table1"):
        run = run_protocol(protocol, table, X, spec, seeds=[0])
        f1[protocol.table1_row] = {lv: v["mean"] for lv, v in run["levels"].items()}
    assert f1[11]["architecture"] == pytest.approx(1.0)
    assert f1[1]["architecture"] > f1[1]["checkpoint"]
    assert set(f1[2]) == {"architecture"}


def test_attributor_spec_parsing():
    spec = AttributorSpec.parse("knn:k=9,standardize=true,metric=euclidean")
    assert dict(spec.params) == {"k": 9, "standardize": True, "metric": "euclidean"}
    assert spec.id.startswith("knn(k=9,metric=euclidean,standardize=True")
    with pytest.raises(ValueError, match="bad parameter"):
        AttributorSpec.parse("knn:kk=3")
    with pytest.raises(ValueError, match="unknown attributor"):
        AttributorSpec.parse("forest")


def test_f1_versus_k_equals_a_knn_run_per_k(study):
    from sourcetrace.attribution.knn import KNNAttributor
    from sourcetrace.attribution.metrics import macro_f1
    from sourcetrace.benchmark.runner import f1_versus_k

    _, table, X = study
    split = build_splits(load_protocol("table1-01-baseline"), table, [0])[0]
    curve = f1_versus_k(X, table, split, "checkpoint", "cosine", max_k=30)
    assert sorted(curve) == list(range(1, 31))
    y = table.checkpoint.astype(str)
    for k in (1, 7, 30):
        pred = KNNAttributor(k=k).fit(X[split.support], y[split.support]).predict(X[split.validation])
        assert curve[k] == pytest.approx(macro_f1(y[split.validation], pred))
