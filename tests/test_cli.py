import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.cli import main


def test_corpus_import_features_export_attribute(speech_tree, tmp_path, capsys):
    # Hold one prompt of every class out of the support corpus: those are the clips to attribute.
    support_src = tmp_path / "support-src"
    shutil.copytree(speech_tree, support_src)
    held = sorted(support_src.rglob("p7.wav"))
    queries = []
    for wav in held:
        dest = tmp_path / "queries" / f"{wav.parent.parent.name}__{wav.parent.name}.wav"
        dest.parent.mkdir(exist_ok=True)
        shutil.move(wav, dest)
        queries.append(dest)
    assert main(["corpus", "import", str(support_src), "--out", str(tmp_path / "c")]) == 0
    assert main(["corpus", "validate", str(tmp_path / "c")]) == 0
    assert main(["features", str(tmp_path / "c"), "--extractor", "lfcc", "--quiet", "--export", str(tmp_path / "f.npz")]) == 0
    with np.load(tmp_path / "f.npz") as data:
        assert data["vectors"].shape == (42, 120)
    capsys.readouterr()
    code = main(["attribute", *map(str, queries), "--support", str(tmp_path / "c"), "--extractor", "lfcc",
                 "--level", "architecture", "--k", "3", "--standardize", "--json", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "architecture" and len(out["results"]) == 6
    verdicts = [r["verdict"] for r in out["results"]]
    truth = [q.name.split("__")[0] for q in queries]
    assert sum(v == t for v, t in zip(verdicts, truth)) >= 4  # espeak voices are easy at this level
    for r in out["results"]:
        votes = [c["votes"] for c in r["candidates"]]
        assert votes == sorted(votes, reverse=True) and abs(sum(votes) - 1) < 1e-9
        assert r["threshold"] == out["calibration"]["threshold"]


def test_attribute_with_an_ssl_model_folder(speech_tree, tiny_models, tmp_path, capsys):
    assert main(["corpus", "import", str(speech_tree), "--out", str(tmp_path / "c")]) == 0
    clip = speech_tree / "en-us" / "step-a" / "p0.wav"
    capsys.readouterr()
    code = main(["attribute", str(clip), "--support", str(tmp_path / "c"), "--extractor",
                 f"ssl:{tiny_models['tiny-wav2vec2']}@2", "--device", "cpu", "--k", "1", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["extractor"]["layers"] == [2]
    # The clip is in the support set: its nearest neighbour is itself, at distance ~0.
    assert out["results"][0]["candidates"][0]["label"] == "en-us/step-a"
    assert out["results"][0]["candidates"][0]["nearest_distance"] < 1e-5


def test_attribute_says_unknown_beyond_the_threshold(speech_tree, tmp_path, capsys):
    assert main(["corpus", "import", str(speech_tree), "--out", str(tmp_path / "c")]) == 0
    noise = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.3
    sf.write(tmp_path / "noise.wav", noise, 16000)
    capsys.readouterr()
    code = main(["attribute", str(tmp_path / "noise.wav"), "--support", str(tmp_path / "c"),
                 "--extractor", "lfcc", "--k", "3", "--standardize", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith(f"{tmp_path / 'noise.wav'}: unknown (outlier score")


def test_bad_clip_is_reported_and_exit_is_nonzero(speech_tree, tmp_path, capsys):
    main(["corpus", "import", str(speech_tree), "--out", str(tmp_path / "c")])
    (tmp_path / "c" / "audio" / "en-us" / "step-a" / "en-us__step-a__p0.wav").write_bytes(b"garbage")
    assert main(["features", str(tmp_path / "c"), "--extractor", "mfcc", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "rejected en-us/step-a/p0" in err and "unreadable" in err and "rejects.csv" in err
    sf.write(tmp_path / "tiny.wav", np.zeros(10, np.float32), 16000)
    code = main(["attribute", str(tmp_path / "tiny.wav"), str(tmp_path / "missing.wav"), "--support",
                 str(tmp_path / "c"), "--extractor", "mfcc", "--k", "3", "--no-unknown", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "receptive field" in err and "missing.wav" in err


def test_errors_are_one_clear_line_not_a_traceback(tmp_path, capsys):
    assert main(["corpus", "validate", str(tmp_path)]) == 2
    assert "no manifest.csv" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--extractor", "xls-r-2b@8", "--models-dir", str(tmp_path)]) == 2


def test_demo_main_job_end_to_end_and_rerun(tmp_path, capsys):
    """The README's main job on a smaller prompt set: results, figures, site; a rerun reuses the work."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--prompts", "12", "--k", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "NOT the study's numbers" in out and "Unknown detection" in out
    results = sorted((tmp_path / "demo" / "results").glob("*.json"))
    assert len(results) == 4  # indomain + holdout for lfcc and the tiny SSL model
    assert (tmp_path / "demo" / "site" / "index.html").is_file()
    assert (tmp_path / "demo" / "results" / "figures" / "f1_vs_k.png").is_file()
    unknown = json.loads((tmp_path / "demo" / "unknown-detection.json").read_text())
    assert set(unknown["results"]) == {"lfcc", "ssl-tiny-wav2vec2-L2-float32"}
    assert main(["demo", "--out", str(tmp_path / "demo"), "--prompts", "12", "--k", "5", "--quiet"]) == 0
    again = capsys.readouterr().out
    assert "corpus exists" in again and "0 computed, 132 reused" in again


def test_an_unexpected_exception_is_a_bug_exit_70_with_traceback(monkeypatch, tmp_path, capsys):
    import sourcetrace
    import sourcetrace.corpus

    def broken(*_args, **_kwargs):
        raise ValueError("a plain ValueError is a bug, not a user error")

    monkeypatch.setattr(sourcetrace.corpus.Corpus, "read", broken)
    assert main(["corpus", "validate", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: a plain ValueError is a bug" in err
    assert err.splitlines()[-1].startswith(f"error: this is a bug in sourcetrace {sourcetrace.__version__}: "
                                           "please report it with the traceback above")


def test_a_sourcetrace_error_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    import sourcetrace.corpus
    from sourcetrace.core.errors import UsageError

    def refused(*_args, **_kwargs):
        raise UsageError("--k 0: give a positive k")

    monkeypatch.setattr(sourcetrace.corpus.Corpus, "read", refused)
    assert main(["corpus", "validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --k 0: give a positive k\n"
    assert issubclass(UsageError, ValueError)


def test_bad_values_are_usage_errors(tmp_path, capsys):
    assert main(["synth", "--recipe", str(tmp_path / "r.toml"), "--shard", "x", "--out", str(tmp_path / "c")]) == 2
    assert "error: --shard 'x': expected K/N" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--extractor", "lfcc", "--out", str(tmp_path), "--seeds", "a"]) == 2
    assert "give comma-separated integers" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--extractor", "lfcc", "--max-seconds", "x"]) == 2
    assert "give a number of seconds" in capsys.readouterr().err


def test_each_shared_option_is_defined_once():
    import argparse
    import re
    from pathlib import Path

    import sourcetrace.cli as cli

    def actions(parser):
        for action in parser._actions:
            yield action
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from actions(sub)

    seen: dict[str, list] = {}
    for action in actions(cli.build_parser()):
        for flag in action.option_strings:
            seen.setdefault(flag, []).append(action)
    source = Path(cli.__file__).read_text()
    for flag, spec in cli.SHARED_OPTIONS.items():
        assert len(seen[flag]) >= 2 or flag in ("--threads",), flag  # shared: taken by several commands
        assert {(a.help, repr(a.default), a.type) for a in seen[flag]} == {(spec.get("help"), repr(spec.get("default",
                                                                          False if spec.get("action") else None)),
                                                                          spec.get("type"))}, flag
        assert len(re.findall(rf'p\.add_argument\("{flag}"', source)) == 0, flag  # only through _options
    assert source.count('"--device": dict(') == 1


def test_every_argument_of_every_command_says_what_it_is():
    """`--help` is a newcomer's manual: no option or positional without a help text."""
    import argparse

    import sourcetrace.cli as cli

    def silent(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from silent(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(silent(cli.build_parser(), "sourcetrace")) == []


def test_shard_and_training_run_keep_their_spelling():
    import pytest

    from sourcetrace.core.errors import UsageError
    from sourcetrace.pipeline.recipe import Shard
    from sourcetrace.pipeline.study import TrainingRun

    assert str(Shard.parse("3/16")) == "3/16" and Shard.parse("3/16") == Shard(3, 16)
    assert Shard(1, 3).take(list(range(7))) == [1, 4]
    for bad in ("3", "a/b", "-1/2"):
        with pytest.raises(UsageError, match="expected K/N"):
            Shard.parse(bad)
    with pytest.raises(ValueError, match="need 0 <= index < count"):
        Shard.parse("4/4")
    for text in ("vits/zero-init", "vits/scheduled", "gradtts/pretrained", "matcha/finetuned/9136"):
        assert str(TrainingRun.parse(text)) == text
    assert TrainingRun.parse("matcha/finetuned/92").speaker == "92"
    with pytest.raises(UsageError):
        TrainingRun.parse("vits/finetuned")


# User mistakes that once surfaced as another exception type (and so, since only SourcetraceError and
# OSError are one-line errors, as a bug's traceback, exit 70): each is now a one-line error.
NOT_UTF8 = b"\xff\xfe\x00[study]\n"


def test_a_recipe_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "recipe.toml").write_bytes(NOT_UTF8)
    assert main(["run", str(tmp_path / "recipe.toml"), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "recipe.toml" in err and "not UTF-8" in err and "Traceback" not in err


def test_a_split_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like

    lj = make_ljspeech_like(tmp_path / "lj", 2, 1, 1)
    (tmp_path / "split.tsv").write_bytes(NOT_UTF8)
    assert main(["datasets", "prompts", str(lj.root), "--out", str(tmp_path / "p.tsv"),
                 "--split", str(tmp_path / "split.tsv")]) == 2
    err = capsys.readouterr().err
    assert "split.tsv: not UTF-8" in err and "Traceback" not in err


def test_bad_values_of_the_library_are_usage_errors(tmp_path):
    from sourcetrace.benchmark.protocol import load_protocol, load_protocols
    from sourcetrace.benchmark.runner import AttributorSpec
    from sourcetrace.checkpoints.registry import load_registry
    from sourcetrace.core.device import resolve_device
    from sourcetrace.core.errors import SourcetraceError

    (tmp_path / "p.toml").write_bytes(NOT_UTF8)
    (tmp_path / "broken.toml").write_text("[[checkpoint]\n")
    shipped = (Path(__file__).parent.parent / "checkpoints" / "registry.toml").read_text()
    (tmp_path / "extra.toml").write_text(shipped.replace("[[checkpoint]]\n", '[[checkpoint]]\ncolour = "red"\n', 1))
    cases = [(lambda: AttributorSpec.parse("knn:k=abc"), "k='abc' is not a number"),
             (lambda: resolve_device("gpu"), "--device 'gpu'"),
             (lambda: load_protocol(str(tmp_path / "p.toml")), "not UTF-8"),
             (lambda: load_protocols("table1", ["table1-01-baseline"]), "not both or neither"),
             (lambda: load_protocols(None, ()), "not both or neither"),
             (lambda: load_registry(tmp_path / "broken.toml"), "not valid TOML"),
             (lambda: load_registry(tmp_path / "extra.toml"), "unknown key(s) colour")]
    for call, message in cases:
        with pytest.raises(SourcetraceError) as caught:
            call()
        assert message in str(caught.value)
