"""Label levels beyond the study's two: implementation, vocoder family, fine-tune speaker.

Splits and labels of each new protocol on synthetic corpora of known structure, their invariants,
the errors a corpus that cannot ask a question gets, and the existing protocols left as they were.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier

from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import (
    ClipTable,
    ProtocolError,
    UnsatisfiableProtocol,
    build_splits,
    builtin_protocols,
    codebase,
    load_protocol,
    load_suite,
    parse_protocol,
)
from sourcetrace.benchmark.results import load_result
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.splits import split_prompts
from sourcetrace.benchmark.summary import table1_summary
from sourcetrace.benchmark.synthetic import STUDY_ARCHITECTURES, clustered_vectors, study_rows
from sourcetrace.core.fileio import write_json_atomic

ARCHITECTURES = (*STUDY_ARCHITECTURES, "vits-espnet")
SPEAKERS = ("92", "6097", "9136")
OTHER_VOCODERS = {"bigvgan-22k": "bigvgan", "vocos-mel24k": "vocos"}
CORPUS = "work/beyond/corpus"


def beyond_rows(**overrides) -> list[dict]:
    """A corpus that can ask every question: two VITS codebases, three vocoder families, three speakers."""
    settings = dict(n_prompts=10, architectures=ARCHITECTURES, finetune_speakers=SPEAKERS,
                    other_vocoders=OTHER_VOCODERS, provenance=True)
    return study_rows(**{**settings, **overrides})


@pytest.fixture(scope="module")
def beyond():
    rows = beyond_rows()
    return rows, ClipTable.from_records(rows, source=CORPUS), clustered_vectors(rows, dim=16)


def _prompts_never_cross(table, split):
    assert not set(table.prompt_id[split.support]) & set(table.prompt_id[split.query])
    assert not set(split.support) & set(split.query)


# Every protocol shipped before the levels beyond the study: its file, hence its sha256 in results
# and boards, must not change (a changed definition is a new version).
EXISTING_SHA256 = {
    "holdout": "3ccface7a1a8966e331151eb151f64c8b8c59fd4bb847ddc4af46707791cda71",
    "indomain": "d50ca77ff5ced2adec2d9464d37e0a8688837bc0a76aacfc73366c89d32773a0",
    "mixed-prompts": "d477ace152659c451ddbb24111c1fd8745fbd5408737c7a720edc2962475073e",
    "table1-01-baseline": "54fa124da6bbd9f64556f35d40bee7230c53d720ce051b55c59a5999aa76c418",
    "table1-02-ood-pretrained": "ec5f6a77b7a1971f2f30b5f2e6be0ea0dab2cc37288afe972e9531d17884583f",
    "table1-03-ood-three-steps": "6e15edfbc2167782657520a27e74f9f87dc8727d673222cfe71444d5aff0c995",
    "table1-04-ood-five-random": "2cd43f0410748ed93abf9646cef28c060bdcc8a12730405f4cfaa03ad959b4d2",
    "table1-05-mixed-prompts": "29d58fc498794b30c8f903ff107e2584d32db12d4e851f66c9713a218cd41551",
    "table1-06-same-vocoder": "5e0d9e1f43d4579ea953ea2a6bc32aa7a1a8f039f6238a6b82cc610eefac06ea",
    "table1-07-mixed-vocoder": "f2c008ae58317038cc6d0d69649178a2873b4a190da51414e1c2ff752bdf402d",
    "table1-08-speaker-finetuned": "e8ca7103c3da34d8c46d644958f228aff57b6c0ab0acc8a1241de5c1ab0ed548",
    "table1-09-speaker-pretrained-only": "24877cbcac28796f53b19644679787e1becd5647e1406617806f207c55e4c650",
    "table1-10-speaker-baseline-support": "4aac774bba2911012be277985bf4f15d412bd2a03dcdcfa7d064dc013875c941",
    "table1-11-zero-init": "1f9f4c56417f78c64352d959fb95894b8353e305eb3cbe41936634f54109ba67",
    "table1-12-zero-init-to-trained": "9e9dad4b889cd4d1e0f63e78f307496c64919304887cd1b9c95fa8a14239e5dd",
}


def test_existing_protocols_keep_their_files_and_defaults():
    assert {name: load_protocol(name).sha256 for name in EXISTING_SHA256} == EXISTING_SHA256
    assert len(load_suite("table1")) == 12
    for name in EXISTING_SHA256:  # without a `balance` key a protocol still balances the study's two levels only
        protocol = load_protocol(name)
        assert set(protocol.balance) <= {"checkpoint", "architecture"} and not protocol.architectures
    beyond = load_suite("beyond")
    assert [(p.name, p.levels) for p in beyond] == [("implementation", ("implementation",)),
                                                   ("vocoder-family", ("vocoder-family",)),
                                                   ("finetune-speaker", ("finetune-speaker",))]
    assert [p.name for p in load_suite("table1-and-beyond")] == [p.name for p in load_suite("table1")] + [p.name for p in beyond]
    public = {p.name for p in load_suite("public-sets")}  # the public sets' own splits (test_datasets_shipped.py)
    assert set(EXISTING_SHA256) | {p.name for p in beyond} | public == set(builtin_protocols())


def test_label_columns_do_not_change_existing_protocols():
    """The same corpus with and without the columns the new levels read: identical runs."""
    plain = study_rows(n_prompts=10)
    labelled = study_rows(n_prompts=10, provenance=True)
    assert [replace(r, implementation="", speaker="", vocoder_family="") for r in labelled] == plain
    X = clustered_vectors(plain, dim=8)
    assert np.array_equal(X, clustered_vectors(labelled, dim=8))
    spec = AttributorSpec.parse("knn:k=5")
    for protocol in load_suite("table1"):
        runs = [run_protocol(protocol, ClipTable.from_records(rows), X, spec, seeds=[0, 1]) for rows in (plain, labelled)]
        assert json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True), protocol.name


def test_implementation_level_compares_two_codebases_of_one_architecture(beyond):
    rows, table, X = beyond
    protocol = load_protocol("implementation")
    assert codebase("coqui-tts 0.28.0") == "coqui-tts" and codebase("espnet") == "espnet" and codebase(" ") == ""
    splits = build_splits(protocol, table, [0, 1])
    for split in splits:
        _prompts_never_cross(table, split)
        assert {c.split("/")[0] for c in split.support_checkpoints} == {"vits", "vits-espnet"}
        assert split.support_checkpoints == split.query_checkpoints and len(split.support_checkpoints) == 2 * 10
        for side in (split.support, split.query):
            assert dict(zip(*np.unique(table.labels("implementation")[side], return_counts=True))) == {
                "coqui-tts": len(side) // 2, "espnet": len(side) // 2}
    # The label is the codebase, whatever version a clip records.
    older = [replace(r, implementation="coqui-tts 0.27.1") if r.checkpoint == "vits/pretrained" else r for r in rows]
    assert sorted(set(ClipTable.from_records(older).labels("implementation")[splits[0].support])) == ["coqui-tts", "espnet"]
    run = run_protocol(protocol, table, X, AttributorSpec.parse("knn:k=5"), seeds=[0, 1])
    assert list(run["levels"]) == ["implementation"]
    assert run["levels"]["implementation"]["confusion"]["labels"] == ["coqui-tts", "espnet"]
    assert run["levels"]["implementation"]["mean"] == pytest.approx(1.0)  # architecture centres 4 sigma apart


def test_vocoder_family_level_equals_an_independent_sklearn_computation(beyond):
    rows, table, X = beyond
    protocol = load_protocol("vocoder-family")
    run = run_protocol(protocol, table, X, AttributorSpec.parse("knn:k=7"), seeds=[0, 1])
    ckpt, prompt = np.array([r.checkpoint for r in rows]), np.array([r.prompt_id for r in rows])
    family = np.array([r.vocoder_family for r in rows])
    mel_trained = np.array([r.architecture in ("fastpitch", "gradtts", "matcha")
                            and (c.endswith("/pretrained") or "/step-" in c) for r, c in zip(rows, ckpt)])
    expected = []
    for seed, split in zip((0, 1), build_splits(protocol, table, [0, 1])):
        part = split_prompts(sorted(set(prompt)), seed)
        s, q = mel_trained & np.isin(prompt, part["support"]), mel_trained & np.isin(prompt, part["query"])
        assert np.array_equal(split.support, np.flatnonzero(s)) and np.array_equal(split.query, np.flatnonzero(q))
        # 3 mel architectures x 10 checkpoints x 5 vocoders (3 HiFi-GANs, BigVGAN, Vocos) x 7 prompts
        assert s.sum() == 30 * 5 * 7 and set(table.vocoder[split.support]) == {
            "hifigan-fastpitch", "hifigan-gradtts", "hifigan-matcha", "bigvgan-22k", "vocos-mel24k"}
        pred = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute").fit(X[s], family[s]).predict(X[q])
        expected.append(f1_score(family[q], pred, labels=np.unique(family[s]), average="macro"))
    np.testing.assert_allclose([e["macro_f1"] for e in run["levels"]["vocoder-family"]["per_seed"]], expected, atol=1e-12)
    assert run["levels"]["vocoder-family"]["confusion"]["labels"] == ["bigvgan", "hifigan", "vocos"]


def test_vocoder_family_needs_every_vocoder_of_every_checkpoint(beyond):
    rows, _, _ = beyond
    gap = [r for r in rows if r.clip_id != "gradtts/step-050000/LJ-0004@vocos-mel24k"]
    with pytest.raises(UnsatisfiableProtocol, match=r"'gradtts/step-050000' with vocoder vocos-mel24k lacks 1 prompt"):
        build_splits(load_protocol("vocoder-family"), ClipTable.from_records(gap), [0, 1, 2])


def test_finetune_speaker_level_from_the_speaker_column_or_the_name(beyond):
    rows, table, X = beyond
    protocol = load_protocol("finetune-speaker")
    split = build_splits(protocol, table, [0])[0]
    _prompts_never_cross(table, split)
    assert split.support_checkpoints == sorted(f"{a}/ft-{s}" for a in ARCHITECTURES for s in SPEAKERS)
    labels = table.labels("finetune-speaker")
    assert [labels[split.support].tolist().count(s) for s in SPEAKERS] == [len(split.support) // 3] * 3
    assert set(labels) == {*SPEAKERS, "LJ"}  # every other checkpoint speaks the training speaker
    # A corpus without the speaker column (e.g. imported): the ft-<speaker> names give the same labels.
    unnamed = ClipTable.from_records([replace(r, speaker="") for r in rows])
    assert np.array_equal(unnamed.labels("finetune-speaker")[split.support], labels[split.support])
    run = run_protocol(protocol, table, X, AttributorSpec.parse("knn:k=3"), seeds=[0, 1])
    assert run["levels"]["finetune-speaker"]["confusion"]["labels"] == sorted(SPEAKERS)
    # A speaker column that contradicts the checkpoint's name is refused, naming the checkpoint.
    wrong = [replace(r, speaker="92") if r.checkpoint == "matcha/ft-6097" else r for r in rows]
    with pytest.raises(UnsatisfiableProtocol, match=r"'matcha/ft-6097' is the fine-tune of speaker '6097'.*\['92'\]"):
        build_splits(protocol, ClipTable.from_records(wrong), [0])


def test_a_corpus_that_cannot_ask_the_question_is_told_what_is_missing(beyond):
    rows, _, _ = beyond
    study = study_rows(n_prompts=10, provenance=True)  # the study's corpus: one VITS, HiFi-GANs only, one speaker
    cases = [
        ("implementation", study, r"architecture 'vits-espnet' is not in the corpus"),
        ("implementation", [replace(r, implementation="coqui-tts 0.28.0") if r.architecture == "vits-espnet" else r
                            for r in rows], r"support holds 1 implementation class \['coqui-tts'\]: the question needs two implementations"),
        ("implementation", [replace(r, implementation="") if r.checkpoint == "vits-espnet/step-050000" else r for r in rows],
         r"10 clip\(s\) of checkpoint 'vits-espnet/step-050000' have no implementation label \(manifest column 'implementation' empty\)"),
        ("vocoder-family", study, r"support holds 1 vocoder-family class \['hifigan'\]"),
        ("vocoder-family", study_rows(n_prompts=10), r"none of the protocol's \d+ clips records one \(manifest column 'vocoder_family'"),
        ("vocoder-family", study_rows(n_prompts=10, vocoder_variants=False, provenance=True), r"swapped vocoders"),
        ("finetune-speaker", study, r"support holds 1 finetune-speaker class \['9136'\]: the question needs fine-tunes on two speakers"),
        ("finetune-speaker", beyond_rows(finetune_speakers=()), r"no architecture has checkpoints of every role \['finetuned'\]"),
    ]
    for name, corpus_rows, message in cases:
        with pytest.raises(UnsatisfiableProtocol, match=message) as err:
            build_splits(load_protocol(name), ClipTable.from_records(corpus_rows, source=CORPUS), [0])
        assert str(err.value).startswith(f"protocol {name!r} cannot run on corpus {CORPUS!r}; missing:"), str(err.value)


def test_levels_in_protocol_files_are_checked():
    good = ('title="t"\nversion=1\nprompts="disjoint"\nvocoder="all"\nlevels=["vocoder-family"]\n'
            'checkpoints="disjoint"\nsupport={roles=["pretrained"]}\nquery={roles=["scheduled"]}\n')
    protocol = parse_protocol(good, "x")  # disjoint checkpoints: any level but the checkpoint level
    assert protocol.levels == ("vocoder-family",) and protocol.balance == ("checkpoint", "architecture")
    for bad, message in [(good.replace('"vocoder-family"', '"codebase"'), "unknown level"),
                         (good.replace('levels=["vocoder-family"]', 'levels=["checkpoint"]'), "checkpoint level cannot apply"),
                         (good + "architectures=[]\n", "architectures must not be empty"),
                         (good + 'balance=["speaker"]\n', "unknown level")]:
        with pytest.raises(ProtocolError, match=message):
            parse_protocol(bad, "x", "x.toml")


def test_reports_show_the_new_levels(beyond, tmp_path):
    _, table, X = beyond
    spec = AttributorSpec.parse("knn:k=5")
    files = []
    for protocol in [load_protocol("table1-01-baseline"), *load_suite("beyond")]:
        run = run_protocol(protocol, table, X, spec, seeds=[0])
        result = make_result(protocol, run, spec, "lfcc", {"name": "lfcc"}, "0" * 64,
                             {"sha256": "1" * 64, "path": CORPUS, "n_clips": len(table)}, "test")
        files.append(tmp_path / f"{protocol.name}.json")
        write_json_atomic(files[-1], result)
        load_result(files[-1])  # results with the new levels pass the results schema
    summary = table1_summary([load_result(f) for f in files])
    assert summary.splitlines()[0] == "| # | protocol | lfcc ckpt | lfcc arch | lfcc impl | lfcc vocoder | lfcc speaker |"
    assert "| 1 | table1-01-baseline |" in summary and "| — |" not in summary
    site = build_leaderboard(files, tmp_path / "site").parent
    page = (site / "index.html").read_text()
    for level in ("checkpoint", "architecture", "implementation", "vocoder-family", "finetune-speaker"):
        assert f'class="lv-{level}">{level} level</th>' in page and f'value="{level}"' in page
    assert "table[data-level=implementation] .lv-finetune-speaker" in page and "all levels</label>" in page
    header = (site / "leaderboard.csv").read_text().splitlines()[0]
    assert "implementation implementation mean" in header and "finetune-speaker finetune-speaker std" in header


def test_a_fine_tune_question_leaves_out_an_architecture_without_fine_tunes(beyond):
    """An inference-only generator (XTTS: zero-init models only) sits in the corpus beside the
    fine-tuned architectures; finetune-speaker asks its question of the others."""
    rows, _, _ = beyond
    xtts = [replace(r, clip_id=r.clip_id.replace("vits/", "xtts/", 1), architecture="xtts",
                 checkpoint=r.checkpoint.replace("vits/", "xtts/", 1), implementation="coqui-tts 0.28.0")
            for r in rows if r.checkpoint.startswith("vits/zero-init")]
    table = ClipTable.from_records(rows + xtts, source=CORPUS)
    splits = build_splits(load_protocol("finetune-speaker"), table, [0, 1])
    used = {a for s in splits for a in table.architecture[np.concatenate([s.support, s.query])]}
    assert "xtts" not in used and {"vits", "vits-espnet"} <= used
