"""Leaderboard boards (init, add, build): submissions checked against the board, tampering refused;
the site readable at 1366 px, free of machine paths, with Hugging Face model-index and CSV exports."""

import csv
import getpass
import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from test_bench_and_leaderboard import render

from sourcetrace import __version__
from sourcetrace.benchmark.board import BoardError, add_results, build_board, init_board, protocols_from
from sourcetrace.benchmark.figures import plot_f1_versus_k
from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import ClipTable, load_suite
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
from sourcetrace.cli import main
from sourcetrace.core.fileio import sha256_json

CORPUS_SHA = "a" * 64


@pytest.fixture(scope="module")
def table1(tmp_path_factory):
    """Table 1 results (12 protocols, 2 seeds) of 4 systems on a synthetic study corpus, written as
    a bench run on this machine would: absolute corpus path, home folder in the command line, a figure."""
    root = tmp_path_factory.mktemp("table1")
    corpus_path = root / "my-corpus"
    rows = study_rows(n_prompts=10)
    table = ClipTable.from_records(rows)
    out = root / "results"
    plot_f1_versus_k({"xls-r-2b@8 · checkpoint": {"1": 0.5, "2": 0.6}}, out / "figures" / "f1_vs_k.png", "F1 versus k")
    command = f"sourcetrace bench {corpus_path} --suite table1 --models-dir {Path.home() / 'models'} --out {out}"
    for extractor, seed in (("xls-r-2b@8", 0), ("w2v-bert-2.0@4", 1)):
        X = clustered_vectors(rows, dim=8, seed=seed)
        fingerprint = {"kind": "synthetic", "name": extractor}
        for attributor in ("knn:k=5,metric=cosine", "probe:C=0.5"):
            spec = AttributorSpec.parse(attributor)
            for protocol in load_suite("table1") + load_suite("generic"):
                run = run_protocol(protocol, table, X, spec, seeds=[0, 1])
                result = make_result(protocol, run, spec, extractor, fingerprint, sha256_json(fingerprint),
                                     {"path": str(corpus_path), "sha256": CORPUS_SHA, "n_clips": len(rows)}, command)
                result["figures"] = {"f1_vs_k": "figures/f1_vs_k.png"}
                folder = out if protocol.table1_row else root / "generic"  # generic: more columns than Table 1
                folder.mkdir(exist_ok=True)
                (folder / f"{protocol.name}__{spec.name}__{extractor}.json").write_text(json.dumps(result))
    return out, corpus_path


@pytest.fixture(scope="module")
def real_bench(speech_tree, tmp_path_factory):
    """`sourcetrace bench` on espeak-ng speech (lfcc, in-domain, 2 seeds): results as submitted."""
    root = tmp_path_factory.mktemp("realbench")
    assert main(["corpus", "import", str(speech_tree), "--out", str(root / "corpus")]) == 0
    assert main(["bench", str(root / "corpus"), "--protocol", "indomain", "--extractor", "lfcc",
                 "--attributor", "knn:k=3", "--seeds", "0,1", "--out", str(root / "results"), "--quiet"]) == 0
    return root


@pytest.mark.slow
def test_a_board_takes_real_results_keeps_a_ledger_and_builds_a_site(real_bench, tmp_path, capsys):
    board, site = tmp_path / "board", tmp_path / "site"
    assert main(["leaderboard", "init", str(board), "--corpus", str(real_bench / "corpus"), "--protocols", "indomain,holdout"]) == 0
    meta = json.loads((board / "board.json").read_text())
    result_file = next((real_bench / "results").glob("indomain__*.json"))
    result = json.loads(result_file.read_text())
    assert meta["corpus_sha256"] == result["corpus"]["sha256"]  # --corpus hashes the corpus as bench does
    assert meta["protocols"]["indomain"]["sha256"] == result["protocol"]["sha256"]
    assert main(["leaderboard", "add", str(real_bench / "results"), "--board", str(board), "--submitter", "Ana Pop"]) == 0
    ledger = [json.loads(line) for line in (board / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 1
    entry = ledger[0]
    assert (entry["submitter"], entry["sourcetrace"], entry["command"]) == ("Ana Pop", __version__, result["provenance"]["command"])
    stored = board / entry["result"]
    assert stored.read_bytes() == result_file.read_bytes()  # kept byte for byte
    assert (stored.parent / result["figures"]["f1_vs_k"]).read_bytes()[:4] == b"\x89PNG"
    # The same file again: nothing to do.
    capsys.readouterr()
    assert main(["leaderboard", "add", str(result_file), "--board", str(board), "--submitter", "Ana Pop"]) == 0
    assert "already on the board" in capsys.readouterr().out
    assert len((board / "ledger.jsonl").read_text().splitlines()) == 1
    assert main(["leaderboard", "build", str(board), "--out", str(site)]) == 0
    page = (site / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert links and all(not re.match(r"[a-z]+:|/", link) for link in links)  # relative links only
    for link in links:
        assert (site / link).is_file(), link
    assert any(link.startswith("results/") for link in links) and any(link.startswith("figures/") for link in links)


def test_render_takes_results_and_each_action_checks_its_options(table1, tmp_path, capsys):
    results, _ = table1
    assert main(["leaderboard", "render", str(results), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()
    older = json.loads((results / "table1-01-baseline__knn__xls-r-2b@8.json").read_text())
    del older["attributor"]["params"], older["figures"]  # a results file from before both were written
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "r.json").write_text(json.dumps(older))
    assert main(["leaderboard", "render", str(tmp_path / "older"), "--out", str(tmp_path / "older-site")]) == 0
    assert '<span class="sys">knn k=5</span>' in (tmp_path / "older-site" / "index.html").read_text()
    assert main(["leaderboard", "build", str(tmp_path / "b"), "--out", str(tmp_path / "s"), "--submitter", "x"]) == 2
    assert "unrecognized arguments: --submitter x" in capsys.readouterr().err
    assert main(["leaderboard", "add", str(results)]) == 2
    assert "the following arguments are required: --board, --submitter" in capsys.readouterr().err
    assert main(["leaderboard", str(results), "--out", str(tmp_path / "site")]) == 2  # the old bare form: render
    assert "invalid choice" in capsys.readouterr().err


def _tampered(table1, tmp_path, change) -> Path:
    results, _ = table1
    obj = json.loads(next(results.glob("table1-01-baseline__knn__xls-r-2b@8.json")).read_text())
    change(obj)
    path = tmp_path / "submitted" / "result.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _drop_seed(obj):
    obj["levels"]["checkpoint"]["per_seed"] = obj["levels"]["checkpoint"]["per_seed"][:1]


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["levels"]["architecture"].update(mean=r["levels"]["architecture"]["mean"] - 0.01),
     r"architecture: stored mean .* is not the .* its per-seed values give"),
    (lambda r: r["levels"]["checkpoint"].update(std=r["levels"]["checkpoint"]["std"] + 0.05), r"stored std"),
    (lambda r: r["corpus"].update(sha256="b" * 64), r"corpus sha256 bbbb.* is not the board's corpus"),
    (lambda r: r["protocol"].update(sha256="c" * 64), r"protocol 'table1-01-baseline' sha256 cccc.* is not the board's"),
    (_drop_seed, r"checkpoint: per-seed values for seeds \[0\], the result declares seeds \[0, 1\]"),
    (lambda r: r["features"].pop("fingerprint"), r"features.fingerprint is missing"),
    (lambda r: r["features"]["fingerprint"].update(name="another"), r"does not hash to features.fingerprint_sha256"),
    (lambda r: r.update(schema_version=99), r"schema_version 99, this sourcetrace reads 1"),
], ids=["changed-mean", "changed-std", "other-corpus", "other-protocol-hash", "incomplete-seeds", "no-fingerprint",
        "edited-fingerprint", "schema-version"])
def test_tampered_results_are_refused_with_the_reason(table1, tmp_path, change, reason):
    board = tmp_path / "board"
    init_board(board, CORPUS_SHA, protocols_from("table1"))
    with pytest.raises(BoardError, match=reason):
        add_results(board, [_tampered(table1, tmp_path, change)], "Ana Pop", log=lambda _: None)
    assert not (board / "results").exists() and not (board / "ledger.jsonl").exists()


def test_a_protocol_edited_after_the_run_is_refused(table1, tmp_path, capsys):
    results, _ = table1
    edited = tmp_path / "table1-01-baseline.toml"
    builtin = Path(__file__).parents[1] / "benchmark" / "protocols" / "table1-01-baseline.toml"
    edited.write_text(builtin.read_text().replace("9 scheduled", "nine scheduled", 1))
    assert main(["leaderboard", "init", str(tmp_path / "board"), "--corpus-sha256", CORPUS_SHA, "--protocols", str(edited)]) == 0
    code = main(["leaderboard", "add", str(results / "table1-01-baseline__knn__xls-r-2b@8.json"),
                 "--board", str(tmp_path / "board"), "--submitter", "Ana Pop"])
    err = capsys.readouterr().err
    assert code == 2 and "the protocol file differs from the board's" in err


def test_one_bad_file_adds_nothing_and_build_refuses_a_result_edited_on_the_board(table1, tmp_path):
    results, _ = table1
    board = tmp_path / "board"
    init_board(board, CORPUS_SHA, protocols_from("table1"))
    good = results / "table1-02-ood-pretrained__probe__xls-r-2b@8.json"
    bad = _tampered(table1, tmp_path, lambda r: r["corpus"].update(sha256="b" * 64))
    with pytest.raises(BoardError, match=r"nothing added .*is not the board's corpus"):
        add_results(board, [good, bad], "Ana Pop", log=lambda _: None)
    assert not (board / "ledger.jsonl").exists()
    assert add_results(board, [good], "Ana Pop", log=lambda _: None) == 1
    stored = next((board / "results").glob("*/result.json"))
    obj = json.loads(stored.read_text())
    obj["attributor"]["id"] += " "  # still consistent numbers, but not what was accepted
    stored.write_text(json.dumps(obj))
    with pytest.raises(BoardError, match="not the file the ledger accepted"):
        build_board(board, tmp_path / "site")
    with pytest.raises(BoardError, match=r"--submitter .*one line"):
        add_results(board, [good], "Ana\nPop")


def test_the_site_names_no_machine_path_host_or_user(table1, tmp_path):
    results, corpus_path = table1
    site = tmp_path / "site"
    build_leaderboard(sorted(results.glob("*.json")), site)
    private = [str(corpus_path), str(Path.home()), str(results)]
    words = [w for w in (socket.gethostname(), getpass.getuser()) if w]
    files = [f for f in site.rglob("*") if f.is_file()]
    assert {f.suffix for f in files} == {".html", ".md", ".csv", ".json", ".png"}
    for f in files:
        data = f.read_bytes()
        for text in private:
            assert text.encode() not in data, (f, text)
        if f.suffix != ".png":  # a short name can occur by chance in compressed image bytes
            for word in words:
                assert not re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", data.decode()), (f, word)
    page = (site / "index.html").read_text()
    assert "…/my-corpus" in page
    published = json.loads(next((site / "results").glob("*.json")).read_text())
    assert published["provenance"]["command"].startswith("sourcetrace bench …/my-corpus --suite table1 --models-dir …/models")


def test_exports_model_index_for_the_hub_and_a_csv_of_the_table(table1, tmp_path):
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    results, _ = table1
    build_leaderboard(sorted(results.glob("*.json")), tmp_path / "site")
    index = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["model-index"]
    assert len(index) == 4
    for entry in index:
        # The Hub's own reader and writer give back the same block: nothing it does not know.
        name, evals = model_index_to_eval_results([entry])
        assert eval_results_to_model_index(name, evals) == [entry]
        metric = entry["results"][0]["metrics"][0]
        assert metric["type"] == "f1" and 0 <= metric["value"] <= 1 and metric["args"]["seeds"] == [0, 1]
        assert set(entry["results"][0]["task"]) == {"type", "name"}
    rows = list(csv.DictReader((tmp_path / "site" / "leaderboard.csv").open()))
    assert len(rows) == 6  # 4 systems + 2 published reference rows
    knn = next(r for r in rows if r["attributor"].startswith("knn(k=5") and r["extractor"] == "xls-r-2b@8")
    original = json.loads((results / "table1-01-baseline__knn__xls-r-2b@8.json").read_text())
    assert float(knn["table1-01-baseline checkpoint mean"]) == original["levels"]["checkpoint"]["mean"]
    assert next(r for r in rows if r["published_reference"] == "True")["table1-01-baseline checkpoint mean"] == "0.519"


def _layout(page: Path, tmp_path: Path) -> tuple[int, int, str]:
    """(document scrollWidth, window width, level shown) of `page` in a 1366 x 768 Chromium window."""
    probe = page.with_name("probe.html")  # the page, plus a line that writes down its layout width
    probe.write_text(page.read_text().replace(
        "</body>", "<script>document.body.dataset.width = document.documentElement.scrollWidth + ' ' + "
                   "window.innerWidth;</script></body>"))
    dom = render(probe, tmp_path, flags=("--window-size=1366,768", "--hide-scrollbars", "--dump-dom"))
    width, viewport = map(int, re.search(r'data-width="(\d+) (\d+)"', dom).groups())
    return width, viewport, re.search(r'<table id="board" data-level="(\w+)"', dom).group(1)


def test_the_page_fits_1366_pixels_in_chromium(table1, tmp_path):
    """Set SOURCETRACE_KEEP_SCREENSHOT=PATH.png to look at the page as a reader would."""
    results, _ = table1
    site = tmp_path / "site"
    page = build_leaderboard(sorted(results.glob("*.json")), site)
    assert _layout(page, tmp_path) == (_layout(page, tmp_path)[0], 1366, "both")  # Table 1, both levels
    assert _layout(page, tmp_path)[0] <= 1366
    dom = render(page, tmp_path)
    # One row per system, with short names; the full parameters on hover.
    assert dom.count('<tr class="system">') == 4 and dom.count('<tr class="reference">') == 2
    assert 'title="knn(k=5,metric=cosine,standardize=False,weights=uniform)"><span class="sys">knn k=5</span>' in dom
    shot = tmp_path / "leaderboard-1366.png"
    render(page, tmp_path, flags=("--window-size=1366,768", "--hide-scrollbars", f"--screenshot={shot}"))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(shot.read_bytes()[16:20], "big") == 1366
    if os.environ.get("SOURCETRACE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["SOURCETRACE_KEEP_SCREENSHOT"])
    # More protocols and long names: both levels do not fit; the page shows the architecture level.
    (tmp_path / "long").mkdir()
    for f in [*results.glob("*.json"), *(results.parent / "generic").glob("*.json")]:
        obj = json.loads(f.read_text())
        obj["features"]["extractor"] += "-finetuned-on-a-very-long-dataset-name@24"
        obj["attributor"]["params"]["metric"] = "euclidean-with-a-long-custom-weighting"
        (tmp_path / "long" / f.name).write_text(json.dumps(obj))
    width, _, level = _layout(build_leaderboard(sorted((tmp_path / "long").glob("*.json")), tmp_path / "long-site"), tmp_path)
    assert width <= 1366 and level == "architecture"


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["levels"]["checkpoint"].update(mean=float("nan")), "NaN is not a JSON number"),
    (lambda r: r["levels"]["architecture"].update(std=float("inf")), "Infinity is not a JSON number"),
    (lambda r: r["levels"]["checkpoint"].update(std=-0.5), r"checkpoint: stored std -0.5 is not the"),
], ids=["nan-mean", "infinite-std", "negative-std"])
def test_the_bare_leaderboard_refuses_what_add_refuses(table1, tmp_path, capsys, change, reason):
    """One validation of a result's numbers for both paths: nothing unpublishable reaches a site."""
    submitted = _tampered(table1, tmp_path, change)
    assert main(["leaderboard", "render", str(submitted), "--out", str(tmp_path / "site")]) == 2
    assert re.search(reason, capsys.readouterr().err)
    assert not (tmp_path / "site").exists()
    board = tmp_path / "board"
    init_board(board, CORPUS_SHA, protocols_from("table1"))
    with pytest.raises(BoardError, match=reason):
        add_results(board, [submitted], "Ana Pop", log=lambda _: None)


def test_paths_with_spaces_are_scrubbed_whole(table1, tmp_path):
    private = "/home/alice smith/secret project/corpus"
    submitted = _tampered(table1, tmp_path, lambda r: (
        r["corpus"].update(path=private),
        r["provenance"].update(command=f"sourcetrace bench '{private}' --out /tmp/my results/x")))
    site = tmp_path / "site"
    build_leaderboard([submitted], site)
    for f in (p for p in site.rglob("*") if p.is_file() and p.suffix != ".png"):
        text = f.read_text(encoding="utf-8")
        for word in ("alice", "smith", "secret", "project", "my results"):
            assert word not in text, (f, word)
    published = json.loads(next((site / "results").glob("*.json")).read_text())
    assert published["corpus"]["path"] == "…/corpus"
    assert published["provenance"]["command"] == "sourcetrace bench '…/corpus' --out …/x"


def test_an_oversized_results_file_is_refused_before_it_is_read(table1, tmp_path, capsys):
    from sourcetrace.benchmark.results import MAX_RESULT_BYTES

    huge = _tampered(table1, tmp_path, lambda r: None)
    text = huge.read_text()
    huge.write_text(text + " " * (MAX_RESULT_BYTES + 1 - len(text)))  # still valid JSON: trailing whitespace
    assert huge.stat().st_size == MAX_RESULT_BYTES + 1 and json.loads(huge.read_text())
    assert main(["leaderboard", "render", str(huge), "--out", str(tmp_path / "site")]) == 2
    assert f"{huge}: more than 16 MiB, the most a results file may hold" in capsys.readouterr().err
    board = tmp_path / "board"
    init_board(board, CORPUS_SHA, protocols_from("table1"))
    with pytest.raises(BoardError, match="more than 16 MiB"):
        add_results(board, [huge], "Ana Pop", log=lambda _: None)
    assert not (tmp_path / "site").exists() and not (board / "ledger.jsonl").exists()
