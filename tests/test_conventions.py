"""One home for each piece of knowledge: checkpoint names and clip locations round-trip through
sourcetrace.core.naming; every user error is a SourcetraceError the CLI prints without loading the
generator stack; light commands never import torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.core import naming
from sourcetrace.core.errors import SourcetraceError


@pytest.mark.parametrize("step", [0, 1, 50_000, 500_000, 1_234_567])
def test_step_names_round_trip(step):
    name = naming.step_name(step)
    assert naming.step_of(name) == step and naming.step_of(f"vits/{name}") == step
    assert naming.checkpoint_role(naming.checkpoint_label("vits", name)) == "scheduled"


def test_every_name_has_its_role_and_nothing_else_does():
    built = {naming.PRETRAINED: "pretrained", naming.step_name(3): "scheduled", naming.zero_init_name(2): "zero-init",
             naming.finetune_name("9136"): "finetuned"}
    for name, role in built.items():
        assert naming.checkpoint_role(name) == role == naming.checkpoint_role(naming.checkpoint_label("matcha", name))
        assert role in naming.ROLES
    for other in ("best", "vits/step-", "vits/step-12a", "vits/pretrained-2", "zero-init-sx", "vits/ft-"):
        assert naming.checkpoint_role(other) == "other", other
        assert naming.step_of(other) is None


def test_clip_locations_and_journals_of_default_and_swapped_vocoders():
    label = naming.checkpoint_label("gradtts", naming.step_name(20))
    assert naming.clip_location(label, "LJ-001") == ("gradtts/step-000020/LJ-001", "audio/gradtts/step-000020/LJ-001.wav")
    swapped = naming.clip_location(label, "LJ-001", "hifigan-lj", swapped=True)
    assert swapped == ("gradtts/step-000020@hifigan-lj/LJ-001", "audio/gradtts/step-000020@hifigan-lj/LJ-001.wav")
    assert naming.clip_location(label, "LJ-001", "hifigan-lj", swapped=False) == naming.clip_location(label, "LJ-001")
    journals = {naming.journal_name(label), naming.journal_name(label, "hifigan-lj", True)}
    assert journals == {"gradtts__step-000020.jsonl", "gradtts__step-000020@hifigan-lj.jsonl"}


def _error_classes():
    from sourcetrace.attribution.extractors.ssl import ModelFolderError
    from sourcetrace.benchmark.board import BoardError
    from sourcetrace.benchmark.protocol import ProtocolError, UnsatisfiableProtocol
    from sourcetrace.benchmark.results import ResultError
    from sourcetrace.checkpoints.official import OfficialFileError
    from sourcetrace.checkpoints.registry import RegistryError
    from sourcetrace.core.audio import AudioRejected
    from sourcetrace.core.errors import StageFailed
    from sourcetrace.core.espeak import EspeakMissing
    from sourcetrace.corpus import ManifestError
    from sourcetrace.corpus.release import IncompleteRelease
    from sourcetrace.datasets.prompts import DatasetError
    from sourcetrace.generators.base import GeneratorError
    from sourcetrace.pipeline.recipe import RecipeError
    from sourcetrace.vocoders.base import VocoderError

    return [ModelFolderError, AudioRejected, BoardError, ProtocolError, UnsatisfiableProtocol, ResultError,
            OfficialFileError, RegistryError, ManifestError, DatasetError, EspeakMissing, RecipeError,
            IncompleteRelease, VocoderError, GeneratorError, StageFailed]


def test_every_user_error_shares_one_base_and_keeps_its_builtin_class():
    builtins = (ValueError, OSError, RuntimeError)
    for cls in _error_classes():
        assert issubclass(cls, SourcetraceError) and issubclass(cls, builtins), cls


# Runs one CLI command in a fresh interpreter and reports which heavy modules it loaded.
_RUNNER = """
import json, sys, time
start = time.perf_counter()
from sourcetrace.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "transformers", "sourcetrace.generators", "sourcetrace.vocoders") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "seconds": time.perf_counter() - start}), file=sys.stderr)
"""


def _run_light(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


def _tone_tree(root):
    for arch, ckpt in (("a1", "step-000001"), ("a2", "pretrained")):
        for i in range(2):
            wav = root / arch / ckpt / f"p{i}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(8000) / 16000
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
    return root


def test_light_commands_do_not_import_torch(tmp_path):
    corpus = tmp_path / "c"
    runs = {
        "help": _run_light("--help"),
        "import": _run_light("corpus", "import", str(_tone_tree(tmp_path / "tree")), "--out", str(corpus)),
        "validate": _run_light("corpus", "validate", str(corpus)),
        "pack": _run_light("corpus", "pack", str(corpus), "--out", str(tmp_path / "release")),
        "leaderboard init": _run_light("leaderboard", "init", str(tmp_path / "board"), "--corpus", str(corpus)),
        "a user error": _run_light("corpus", "validate", str(tmp_path / "nothing-here")),
        "an error of the leaderboard": _run_light("leaderboard", "build", str(tmp_path / "board")),
    }
    assert {name: run["code"] for name, run in runs.items()} == {
        "help": 0, "import": 0, "validate": 0, "pack": 0, "leaderboard init": 0, "a user error": 2,
        "an error of the leaderboard": 2}
    assert {name: run["heavy"] for name, run in runs.items() if run["heavy"]} == {}


def test_a_shipped_model_spec_means_the_same_on_the_cli_as_in_a_recipe(tiny_models, tmp_path, capsys):
    """`tiny-wav2vec2@2` (what recipes write) is a spec `--extractor` takes: loaded from --models-dir."""
    from sourcetrace.attribution.extractors import build_extractor
    from sourcetrace.cli import main

    models_dir = tiny_models["tiny-wav2vec2"].parent
    extractor = build_extractor("tiny-wav2vec2@2", models_dir=models_dir, device="cpu")
    assert extractor.layers == [2]
    assert main(["corpus", "import", str(_tone_tree(tmp_path / "tree")), "--out", str(tmp_path / "c")]) == 0
    code = main(["features", str(tmp_path / "c"), "--extractor", "tiny-wav2vec2@2", "--models-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'none' / 'tiny-wav2vec2'}: no such folder" in err and "None" not in err


_SOURCES = ("src/sourcetrace", "attribution", "benchmark", "generators", "vocoders", "checkpoints", "datasets")


def _message_strings():
    """(file:line, text) of every string literal in the package except docstrings: what users read."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for folder in _SOURCES:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    yield f"{path.relative_to(root)}:{node.lineno}", node.value


def _parser_options(parser) -> set[str]:
    import argparse

    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _parser_options(sub)
    return found


def _schema_keys(spec) -> set[str]:
    from sourcetrace.core import schema

    if isinstance(spec, schema.Record):
        return set(spec.fields) | {k for v in spec.fields.values() for k in _schema_keys(v)}
    inner = getattr(spec, "spec", None) or getattr(spec, "value", None) or getattr(spec, "item", None)
    return _schema_keys(inner) if inner is not None else set()


def test_every_flag_and_recipe_key_a_message_names_exists():
    import re

    from sourcetrace.cli import build_parser
    from sourcetrace.core.schema import RECIPE_CORPUS

    options = _parser_options(build_parser())
    recipe_keys = _schema_keys(RECIPE_CORPUS)
    unknown = []
    for where, text in _message_strings():
        unknown += [f"{where}: {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text) if flag not in options]
        unknown += [f"{where}: recipe key {key}" for key in re.findall(r"recipe(?: key)?: (\w+) =", text)
                    if key not in recipe_keys]
    assert unknown == []
    assert "--trust" in options and "trust" in recipe_keys  # the test reads what it should


def test_synth_checkpoint_journals_every_clip_and_resumes_after_an_interrupt(tmp_path, monkeypatch, capsys):
    """`synth CHECKPOINT` is the recipe path with one job: a clip is kept as soon as it is made."""
    from sourcetrace.cli import main
    from sourcetrace.datasets.prompts import Prompt, write_prompts
    from sourcetrace.generators import build_generator, synthesis

    folder = build_generator("gradtts", "tiny", 1).save(tmp_path / "runs" / naming.zero_init_name(1), 0, "zero-init")
    write_prompts(tmp_path / "p.tsv", [Prompt(f"p{i}", text) for i, text in enumerate(["One.", "Two.", "Three.", "Four."])])
    command = ["synth", str(folder), "--prompts", str(tmp_path / "p.tsv"), "--random-vocoder", "0"]
    assert main([*command, "--out", str(tmp_path / "whole")]) == 0

    make_clips, calls = synthesis.make_clips, []

    def killed_at_the_third_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        make_clips(*args, **kwargs)

    monkeypatch.setattr(synthesis, "make_clips", killed_at_the_third_clip)
    assert main([*command, "--out", str(tmp_path / "cut")]) == 130
    journal = tmp_path / "cut" / "parts" / naming.journal_name("gradtts/zero-init-s1")
    assert len(journal.read_text().splitlines()) == 2
    monkeypatch.setattr(synthesis, "make_clips", make_clips)
    capsys.readouterr()
    assert main([*command, "--out", str(tmp_path / "cut")]) == 0
    assert "2 clips made, 2 already there" in capsys.readouterr().out
    for run in ("whole", "cut"):
        assert (tmp_path / run / "manifest.csv").is_file()
    whole, cut = (sorted((tmp_path / run / "audio").rglob("*.wav")) for run in ("whole", "cut"))
    assert [p.read_bytes() for p in whole] == [p.read_bytes() for p in cut] and len(whole) == 4


# Fixtures whose tests train, synthesise or run a whole pipeline, and the markers (pyproject.toml)
# every test that uses one, directly or through another fixture, must carry.
TRAINING_FIXTURES = {"local_run": {"slow"}, "slurm_cluster": {"slow", "slurm"}, "toy_site": {"slow"},
                     "real_bench": {"slow"}}
ITEM_REPORT = '''import json
def pytest_collection_finish(session):
    for item in session.items:
        markers = sorted({m.name for m in item.iter_markers()})
        print("item:", json.dumps([item.nodeid, sorted(item.fixturenames), markers]))
'''


def test_every_test_of_a_training_fixture_is_marked_so_the_fast_run_leaves_it_out(tmp_path):
    """Markers sit beside the tests (`pytestmark`, decorators), so a renamed test keeps them; this
    collects the whole suite, as `pytest -m` sees it, and names each test that lacks one."""
    tests = Path(__file__).resolve().parent
    sources = "\n".join(p.read_text() for p in tests.glob("*.py"))
    assert [f for f in TRAINING_FIXTURES if f"\ndef {f}(" not in sources] == []  # a renamed fixture is renamed here too
    (tmp_path / "item_report.py").write_text(ITEM_REPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider",
                           "-p", "item_report", str(tests)], capture_output=True, text=True, env=env, cwd=tests.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    items = [json.loads(line[len("item: "):]) for line in done.stdout.splitlines() if line.startswith("item: ")]
    assert len(items) > 100
    unmarked = {}
    for nodeid, fixtures, markers in items:
        missing = set().union(*(TRAINING_FIXTURES.get(f, set()) for f in fixtures)) - set(markers)
        if missing:
            unmarked[nodeid] = sorted(missing)
    assert unmarked == {}, f"mark these (module pytestmark or @pytest.mark.NAME on the test): {unmarked}"
