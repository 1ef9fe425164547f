"""`bench --laundered`: a protocol's splits with clean support and a laundered query, one results file per
transform beside the clean ones, its numbers those of `laundering_scores` on the same vectors; a derived
corpus of another corpus, or one short of a clip, refused; the clean results untouched; the leaderboard's
Laundering table, never mixed into the clean columns."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.metrics import macro_f1
from sourcetrace.attribution.store import FeatureStore
from sourcetrace.benchmark.board import add_results, build_board, create_board
from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.openset import run_open_set
from sourcetrace.benchmark.protocol import ClipTable, Protocol, build_splits, load_protocol
from sourcetrace.benchmark.results import load_result, result_file_name, seed_summary
from sourcetrace.benchmark.runner import AttributorSpec, predict_levels
from sourcetrace.cli import main
from sourcetrace.core.errors import UsageError
from sourcetrace.corpus import Corpus, import_corpus
from sourcetrace.corpus.derive import derive_corpus

TRANSFORMS = ("noise:snr=10", "crop:0.5", "resample:8000")  # no codec: no FFmpeg, and fast
CLEAN = "clean"


def laundering_scores(protocol: Protocol, table: ClipTable, clean: np.ndarray, laundered: dict[str, np.ndarray],
                      spec: AttributorSpec, seeds=(0, 1, 2), device: str = "cpu") -> dict[str, dict[str, dict]]:
    """The independent reference of `bench --laundered` (a loop of its own over the splits, not the
    runner's query_X path). {query condition ("clean", then each transform): {level: {"mean", "std", "per_seed"}}}: macro-F1
    over the protocol's seeds with the clean support. Every matrix is aligned with `table`'s rows."""
    for name, X in laundered.items():
        if X.shape != clean.shape:
            raise UsageError(f"laundered vectors {name!r} have shape {X.shape}, the clean ones {clean.shape}: "
                             "the derived corpus must hold every clip of the clean one")
    splits = build_splits(protocol, table, list(seeds))
    out: dict[str, dict[str, dict]] = {}
    for condition, source in {CLEAN: clean, **laundered}.items():
        per_level: dict[str, list[dict]] = {level: [] for level in protocol.levels}
        X = clean if source is clean else clean.copy()  # one copy per condition: its query rows swapped per split
        for split in splits:
            X[split.query] = source[split.query]
            predictions = predict_levels(spec, X, table, split, protocol.levels, device=device)
            X[split.query] = clean[split.query]
            for level in protocol.levels:
                y_true = table.labels(level)[split.query]
                labels = sorted(set(y_true) | set(predictions[level]))
                per_level[level].append({"seed": split.seed, "variant": split.variant,
                                         "macro_f1": macro_f1(y_true, predictions[level], labels=labels)})
        out[condition] = {level: dict(zip(("mean", "std"), seed_summary(runs), strict=True), per_seed=runs)
                          for level, runs in per_level.items()}
    return out
PROTOCOL, ATTRIBUTOR = "indomain", "knn:k=1"


@pytest.fixture(scope="module")
def setup(speech_tree, tmp_path_factory):
    """The clean corpus (3 voices x 2 variants x 8 prompts), its three laundered copies, and the
    results of a bench run without them (`plain`) and with them (`laundered`)."""
    root = tmp_path_factory.mktemp("laundering")
    tree = root / "tree"
    for wav in speech_tree.rglob("*.wav"):
        (tree / wav.relative_to(speech_tree)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, tree / wav.relative_to(speech_tree))
    clean = import_corpus(tree, root / "corpus")
    derived = {spec: root / spec.replace(":", "_") for spec in TRANSFORMS}
    for spec, folder in derived.items():
        assert derive_corpus(clean.root, [spec], folder, progress=False).failed == []
    bench = ["bench", str(clean.root), "--protocol", PROTOCOL, "--extractor", "lfcc", "--attributor", ATTRIBUTOR,
             "--seeds", "0,1", "--no-figures", "--device", "cpu", "--quiet"]
    assert main([*bench, "--out", str(root / "plain")]) == 0
    plain = {p.name: p.read_bytes() for p in (root / "plain").iterdir()}
    laundered = [arg for folder in derived.values() for arg in ("--laundered", str(folder))]
    assert main([*bench, *laundered, "--out", str(root / "plain")]) == 0  # the same folder: clean results kept
    assert main([*bench, *laundered, "--out", str(root / "laundered")]) == 0
    return {"root": root, "clean": clean, "derived": derived, "plain": plain, "bench": bench}


def _name(transform=None) -> str:
    return result_file_name(PROTOCOL, AttributorSpec.parse(ATTRIBUTOR).id, "lfcc", transform)


def test_one_result_per_transform_with_laundering_scores_numbers(setup):
    clean = setup["clean"]
    table = ClipTable.from_records(clean.rows, source=str(clean.root))

    def vectors(root):
        store = FeatureStore(Corpus.read(root), build_extractor("lfcc", device="cpu"))
        store.compute(progress=False)
        return store.load(list(table.clip_id))

    X = vectors(clean.root)
    laundered = {spec: vectors(folder) for spec, folder in setup["derived"].items()}
    protocol = load_protocol(PROTOCOL)
    expected = laundering_scores(protocol, table, X, laundered, AttributorSpec.parse(ATTRIBUTOR), seeds=(0, 1))
    out = setup["root"] / "laundered"
    clean_result = load_result(out / _name())
    assert "laundering" not in clean_result
    for spec, folder in setup["derived"].items():
        result = load_result(out / _name(spec))
        derived = Corpus.read(folder)
        assert result["laundering"]["transform"] == spec
        assert result["laundering"]["corpus"]["n_clips"] == len(derived.rows)
        assert result["laundering"]["corpus"]["sha256"] != clean_result["corpus"]["sha256"]
        assert result["corpus"] == clean_result["corpus"] and result["splits"] == clean_result["splits"]
        assert result["identity"]["laundering"]["corpus_sha256"] == result["laundering"]["corpus"]["sha256"]
        for level in protocol.levels:
            got = [(e["seed"], e["macro_f1"]) for e in result["levels"][level]["per_seed"]]
            assert got == [(e["seed"], e["macro_f1"]) for e in expected[spec][level]["per_seed"]], (spec, level)
            assert result["levels"][level]["mean"] == pytest.approx(expected[spec][level]["mean"], abs=1e-12)
            assert [e["macro_f1"] for e in clean_result["levels"][level]["per_seed"]] == \
                [e["macro_f1"] for e in expected["clean"][level]["per_seed"]]
    # noise at 10 dB moves lfcc's nearest neighbours: the laundered numbers are not the clean ones
    assert expected["noise:snr=10"]["checkpoint"]["mean"] != expected["clean"]["checkpoint"]["mean"]


def test_clean_results_are_the_same_with_and_without_laundered(setup, capsys):
    plain = setup["root"] / "plain"
    assert {n: (plain / n).read_bytes() for n in setup["plain"]} == setup["plain"]  # byte for byte, same files
    assert sorted(p.name for p in plain.iterdir()) == sorted([*setup["plain"], *(_name(t) for t in TRANSFORMS)])
    fresh = json.loads((setup["root"] / "laundered" / _name()).read_bytes())
    before = json.loads(setup["plain"][_name()])
    for result in (fresh, before):
        result.pop("provenance")  # the command line and the time
    assert fresh == before
    # a rerun finds every result up to date, the laundered ones included
    capsys.readouterr()
    laundered = [arg for folder in setup["derived"].values() for arg in ("--laundered", str(folder))]
    assert main([*setup["bench"], *laundered, "--out", str(plain)]) == 0
    assert capsys.readouterr().out.count("up to date") == 1 + len(TRANSFORMS)


def test_a_copy_of_another_corpus_or_one_short_of_a_clip_is_refused(setup, tmp_path, capsys):
    clean, noisy = setup["clean"], setup["derived"]["noise:snr=10"]
    other = Corpus(root=tmp_path / "other", rows=clean.rows[1:])  # another corpus: one clip fewer
    for row in other.rows:
        (other.root / row.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clean.audio_path(row), other.root / row.path)
    other.write()
    derive_corpus(other.root, ["noise:snr=10"], tmp_path / "of-other", progress=False)
    short = tmp_path / "short"
    shutil.copytree(noisy, short)
    rows = Corpus.read(short).rows
    Corpus(root=short, rows=rows[1:]).write()
    stale = tmp_path / "stale"  # one clip made from other audio than the clean corpus holds
    shutil.copytree(noisy, stale)
    rows = Corpus.read(stale).rows
    Corpus(root=stale, rows=[replace(rows[0], parent_sha256="0" * 64), *rows[1:]]).write()
    cases = {tmp_path / "of-other": "derived from another corpus", short: f"lacks 1 clips of {clean.root}",
             stale: f"1 clips were not made from {clean.root}'s audio", clean.root: "not a derived corpus"}
    for folder, message in cases.items():
        capsys.readouterr()
        code = main([*setup["bench"], "--laundered", str(folder), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: {folder}: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()  # refused before any work
    capsys.readouterr()
    assert main([*setup["bench"], "--laundered", str(noisy), "--laundered", str(noisy), "--out", str(tmp_path / "o")]) == 2
    assert "give one folder per transform chain" in capsys.readouterr().err


def test_the_leaderboard_shows_a_laundering_table_apart_from_the_clean_one(setup, tmp_path):
    out = setup["root"] / "laundered"
    clean = load_result(out / _name())
    laundered = {spec: load_result(out / _name(spec)) for spec in TRANSFORMS}
    build_leaderboard([out], tmp_path / "site")
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    main_table, _, section = md.partition("## Laundering")
    assert section and not any(spec in main_table for spec in TRANSFORMS)
    ckpt = clean["levels"]["checkpoint"]["mean"]
    row = next(line for line in section.splitlines() if line.startswith(f"| {PROTOCOL} ") and "| checkpoint |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == f"{ckpt:.3f} ± {clean['levels']['checkpoint']['std']:.3f}"
    for i, spec in enumerate(sorted(TRANSFORMS)):
        entry = laundered[spec]["levels"]["checkpoint"]
        assert cells[5 + 2 * i: 7 + 2 * i] == [f"{entry['mean']:.3f} ± {entry['std']:.3f}", f"{ckpt - entry['mean']:+.3f}"]
    [values] = csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text()))
    for spec in TRANSFORMS:
        assert float(values[f"{PROTOCOL} checkpoint laundered {spec} mean"]) == laundered[spec]["levels"]["checkpoint"]["mean"]
    assert float(values[f"{PROTOCOL} checkpoint mean"]) == ckpt
    metrics = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["model-index"][0]["results"][0]["metrics"]
    by_config = {m["config"]: m for m in metrics}
    assert by_config[f"{PROTOCOL}/checkpoint"]["value"] == ckpt
    noisy = by_config[f"{PROTOCOL}/checkpoint/laundered/noise:snr=10"]
    assert noisy["value"] == laundered["noise:snr=10"]["levels"]["checkpoint"]["mean"]
    assert noisy["args"]["drop"] == ckpt - noisy["value"]
    page = (tmp_path / "site" / "index.html").read_text()
    assert '<table id="laundering">' in page and "noise:snr=10 drop" in page
    # a board takes the laundered results beside the clean one and shows the same table
    board = tmp_path / "board"
    create_board(board, corpus=setup["clean"].root, protocols=PROTOCOL)
    assert add_results(board, [out], submitter="tests", log=lambda _: None) == 1 + len(TRANSFORMS)
    build_board(board, tmp_path / "board-site")
    assert (tmp_path / "board-site" / "leaderboard.md").read_text().partition("## Laundering")[2] == section


def test_open_set_under_laundering_keeps_the_clean_calibration():
    """A shipped split's open-set block for a laundered query: support and calibration (its threshold)
    from the clean vectors, only the query's rows from the laundered ones."""
    rng = np.random.default_rng(0)
    systems = [f"s{i}" for i in range(4)]
    labels = np.repeat(systems, 30)
    X = rng.normal(size=(len(labels), 8)) + 4 * np.repeat(np.eye(4, 8), 30, axis=0)
    support = np.flatnonzero(np.tile(np.arange(30) < 10, 4) & (labels != "s3"))
    calibration = np.flatnonzero(np.tile((np.arange(30) >= 10) & (np.arange(30) < 20), 4))
    query = np.flatnonzero(np.tile(np.arange(30) >= 20, 4))
    open_labels = np.where(labels == "s3", "unknown", labels)
    noisy = X + rng.normal(scale=2.0, size=X.shape)
    mixed = X.copy()
    mixed[query] = noisy[query]
    spec = AttributorSpec.parse("knn:k=3")
    scores = ("knn-distance", "cosine-centroid")
    got = run_open_set(X, open_labels, support, calibration, query, spec, ood_scores=scores, query_X=noisy)
    assert got == run_open_set(mixed, open_labels, support, calibration, query, spec, ood_scores=scores)
    clean = run_open_set(X, open_labels, support, calibration, query, spec, ood_scores=scores)
    assert [e["calibration"] for e in got["scores"].values()] == [e["calibration"] for e in clean["scores"].values()]
    assert got["scores"] != clean["scores"]
