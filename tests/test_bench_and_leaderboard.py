"""`sourcetrace bench` end to end on real (espeak-ng) speech, and the leaderboard in a real browser."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import ClipTable, load_protocol
from sourcetrace.benchmark.results import ResultError, load_result
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
from sourcetrace.cli import main


@pytest.fixture(scope="module")
def bench_out(speech_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert main(["corpus", "import", str(speech_tree), "--out", str(root / "corpus")]) == 0
    code = main(["bench", str(root / "corpus"), "--protocol", "indomain", "--protocol", "holdout",
                 "--holdout", "en-us/step-b,en-gb-scotland/step-a", "--extractor", "lfcc", "--extractor", "mfcc",
                 "--attributor", "knn:k=3,standardize=true", "--seeds", "0,1", "--out", str(root / "results"), "--quiet"])
    assert code == 0
    return root / "results"


def test_bench_writes_valid_results_with_provenance(bench_out):
    files = sorted(bench_out.glob("*.json"))
    assert len(files) == 4  # 2 protocols x 2 extractors
    result = load_result(next(f for f in files if f.name.startswith("indomain") and f.name.endswith("__mfcc.json")))
    assert result["protocol"]["name"] == "indomain" and result["seeds"] == [0, 1]
    assert set(result["levels"]) == {"checkpoint", "architecture"}
    level = result["levels"]["checkpoint"]
    assert [e["seed"] for e in level["per_seed"]] == [0, 1]
    assert level["per_seed"][0]["n_classes"] == 6 and level["per_seed"][0]["n_query"] == 6  # 8 prompts: 6/1/1
    assert 0.0 <= level["mean"] <= 1.0
    assert result["features"]["fingerprint"]["kind"] == "mfcc"
    assert result["provenance"]["versions"]["numpy"] and "bench" in result["provenance"]["command"]
    assert result["figures"]["f1_vs_k"] == "figures/f1_vs_k.png"
    assert (bench_out / "figures" / "f1_vs_k.png").stat().st_size > 10_000
    holdout = load_result(next(f for f in files if f.name.startswith("holdout") and f.name.endswith("__lfcc.json")))
    assert set(holdout["levels"]) == {"architecture"}
    assert holdout["splits"][0]["query_checkpoints"] == ["en-gb-scotland/step-a", "en-us/step-b"]
    summary = (bench_out / "summary.md").read_text()
    assert "| holdout |" in summary and "n/a" in summary


def test_bench_fails_loudly_when_the_corpus_cannot_satisfy_a_protocol(bench_out, capsys):
    corpus = bench_out.parent / "corpus"
    code = main(["bench", str(corpus), "--protocol", "table1-01-baseline", "--extractor", "lfcc",
                 "--out", str(bench_out.parent / "t1"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1 and "has no pretrained checkpoint" in out and "FAILED" in out


def _browser() -> str | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.environ.get("SOURCETRACE_REQUIRE_BROWSER"):
        pytest.fail("chromium is required here (SOURCETRACE_REQUIRE_BROWSER is set) but not installed")
    return exe


def render(page: Path, tmp_path: Path, fragment: str = "", flags: tuple[str, ...] = ("--dump-dom",)) -> str:
    """The DOM after the page's scripts ran (or what other `flags` ask for), from headless Chromium."""
    exe = _browser()
    if exe is None:
        pytest.skip("chromium not installed (tools/setup.sh installs it as root)")
    common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    proc = subprocess.run([exe, *common, *flags, page.resolve().as_uri() + fragment], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_leaderboard_sorts_and_escapes_in_a_real_browser(bench_out, tmp_path):
    files = sorted(bench_out.glob("*.json"))
    hostile = json.loads(files[0].read_text())
    hostile["attributor"]["id"] = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><script>document.title='pwned'</script>"
    (tmp_path / "in").mkdir()
    for f in files[1:]:
        shutil.copy(f, tmp_path / "in" / f.name)
    (tmp_path / "in" / "hostile.json").write_text(json.dumps(hostile))
    page = build_leaderboard(sorted((tmp_path / "in").glob("*.json")), tmp_path / "site")
    dom = render(page, tmp_path)
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert "<title>sourcetrace leaderboard</title>" in dom
    # The id is shown as text (cut to a short name; the whole id in the cell's title), never as markup.
    assert "&lt;img src=x onerror=" in dom and "<img" not in dom and "<script>document.title" not in dom
    # Sorting by a column on load, both directions.
    headers = re.findall(r'<th data-col="(\d+)" class="num lv-(\w+)"', dom)
    col = int(headers[-1][0])  # indomain arch: 0.822 (mfcc), 1.000 (lfcc), none (hostile)

    def column(dom):
        """data-value of cell `col` in every body row, in DOM order."""
        from html.parser import HTMLParser

        class Rows(HTMLParser):
            def __init__(self):
                super().__init__()
                self.rows, self.in_body = [], False

            def handle_starttag(self, tag, attrs):
                if tag == "tbody":
                    self.in_body = True
                elif tag == "tr" and self.in_body:
                    self.rows.append([])
                elif tag == "td" and self.in_body:
                    self.rows[-1].append(dict(attrs).get("data-value", ""))

        parser = Rows()
        parser.feed(dom)
        return [float(r[col]) if r[col] else None for r in parser.rows]

    down = column(render(page, tmp_path, f"#sort=-{col}"))
    up = column(render(page, tmp_path, f"#sort={col}"))
    assert len(down) == 3 and None in down  # a system without this protocol sorts last
    numbers = [v for v in down if v is not None]
    assert len(set(numbers)) == 2
    assert down[-1] is None and numbers == sorted(numbers, reverse=True)
    assert up[0] is None and [v for v in up if v is not None] == sorted(numbers)
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "holdout arch" in md
    index = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert len(index["model-index"]) == 3
    assert index["model-index"][0]["results"][0]["metrics"][0]["type"] == "f1"


def test_leaderboard_refuses_incomparable_results(bench_out, tmp_path):
    files = sorted(bench_out.glob("*.json"))
    other_version = json.loads(files[0].read_text())
    other_version["protocol"]["version"] = 2
    other_version["attributor"]["id"] = "another"
    (tmp_path / "v2.json").write_text(json.dumps(other_version))
    with pytest.raises(ResultError, match=r"protocol '\w+' version 2 .* differs from version 1"):
        build_leaderboard([files[0], tmp_path / "v2.json"], tmp_path / "site")
    other_corpus = json.loads(files[0].read_text())
    other_corpus["corpus"]["sha256"] = "0" * 64
    other_corpus["attributor"]["id"] = "another"
    (tmp_path / "c2.json").write_text(json.dumps(other_corpus))
    with pytest.raises(ResultError, match="different corpora"):
        build_leaderboard([files[0], tmp_path / "c2.json"], tmp_path / "site")
    broken = json.loads(files[0].read_text())
    broken["schema_version"] = 99
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(ResultError, match="schema_version 99"):
        build_leaderboard([tmp_path / "b.json"], tmp_path / "site")
    del broken["levels"]
    broken["schema_version"] = 1
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(ResultError, match="'levels'"):
        load_result(tmp_path / "b.json")


def test_table1_results_get_the_published_reference_rows(tmp_path):
    rows = study_rows(n_prompts=10, vocoder_variants=False)
    table, X = ClipTable.from_records(rows), clustered_vectors(rows, dim=8)
    spec = AttributorSpec.parse("knn:k=3")
    protocol = load_protocol("table1-01-baseline")
    run = run_protocol(protocol, table, X, spec, seeds=[0])
    result = make_result(protocol, run, spec, "synthetic", {"kind": "synthetic"}, "f" * 64,
                         {"path": "synthetic", "sha256": "a" * 64, "n_clips": len(rows)}, "test")
    (tmp_path / "r.json").write_text(json.dumps(result))
    build_leaderboard([tmp_path / "r.json"], tmp_path / "site")
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "published reference" in md and "0.519 ± 0.003" in md and "0.450 ± 0.004" in md


def test_a_second_bench_run_with_nothing_changed_does_no_work(bench_out, capsys):
    corpus = bench_out.parent / "corpus"
    before = {f.name: f.stat().st_mtime_ns for f in bench_out.glob("*.json")}
    args = ["bench", str(corpus), "--protocol", "indomain", "--protocol", "holdout",
            "--holdout", "en-us/step-b,en-gb-scotland/step-a", "--extractor", "lfcc", "--extractor", "mfcc",
            "--attributor", "knn:k=3,standardize=true", "--seeds", "0,1", "--out", str(bench_out), "--quiet"]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("up to date, nothing to do") == 4 and "0 computed, 48 reused" in out
    assert {f.name: f.stat().st_mtime_ns for f in bench_out.glob("*.json")} == before
    # Another hold-out list is another experiment: recomputed.
    args[args.index("--holdout") + 1] = "en-us/step-b"
    assert main(args) == 0
    assert capsys.readouterr().out.count("up to date, nothing to do") == 2
