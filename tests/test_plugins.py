"""Plug-in registries, the conformance kit run on the built-in classes, and a plug-in installed from
outside the repository (tests/toy_plugin) trained, synthesised and benchmarked through the CLI."""

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.probe import LinearProbeAttributor
from sourcetrace.benchmark.runner import AttributorSpec
from sourcetrace.core.plugins import ATTRIBUTORS, EXTRACTORS, GENERATORS, VOCODERS
from sourcetrace.generators import GeneratorError, generator_class
from sourcetrace.testing import (
    ConformanceError,
    assert_conforms,
    attributor_checks,
    extractor_checks,
    generator_checks,
    parametrize_with_checks,
    vocoder_checks,
)
from sourcetrace.vocoders import VocoderError, vocoder_class

TOY_PLUGIN = Path(__file__).parent / "toy_plugin"


def fake_distribution(folder: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata sees one: a .dist-info with entry points."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_registries_hold_the_builtins_and_the_cli_lists_them_without_importing_them():
    assert GENERATORS.names() == ["fastpitch", "gradtts", "matcha", "vits", "vits-espnet", "xtts"]
    assert VOCODERS.names() == ["bigvgan", "dle-hifigan", "hifigan", "nemo-hifigan", "vocos"]
    assert EXTRACTORS.names() == ["lfcc", "mfcc", "ssl"]
    assert ATTRIBUTORS.names() == ["knn", "probe"] and ATTRIBUTORS["knn"] is KNNAttributor
    assert ATTRIBUTORS.get("svm") is None
    code = ("import sys; from sourcetrace.cli import build_parser; p = build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('nemo', 'TTS', 'sourcetrace.generators.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # help texts read names only: no TTS stack, no architecture module
    help_text = subprocess.run([sys.executable, "-m", "sourcetrace.cli", "train", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "fastpitch, gradtts, matcha, vits" in help_text and "hifigan, nemo-hifigan" in help_text


def test_a_bad_plugin_is_refused_naming_its_distribution_and_entry_point(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "badplug", "[sourcetrace.generators]\n"
                      "notagenerator = json:JSONDecoder\n"
                      "misnamed = sourcetrace.generators.gradtts:GradTTSGenerator\n"
                      "missing = badplug_no_such_module:Model\n"
                      "twice = json:JSONDecoder\n"
                      "[sourcetrace.attributors]\nknn = json:JSONDecoder\n"
                      "[sourcetrace.vocoders]\nwrongbase = sourcetrace.attribution.knn:KNNAttributor\n")
    fake_distribution(tmp_path, "otherplug", "[sourcetrace.generators]\ntwice = json:JSONDecoder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"notagenerator", "misnamed", "missing", "twice"} <= set(GENERATORS)
    with pytest.raises(GeneratorError, match=r"distribution badplug 0.1, entry point notagenerator = json:JSONDecoder "
                                             r"\(group sourcetrace.generators\): .* is not a subclass of "
                                             r"sourcetrace.generators.base.Generator"):
        generator_class("notagenerator")
    with pytest.raises(GeneratorError, match="GradTTSGenerator.architecture is 'gradtts', not the registered name 'misnamed'"):
        generator_class("misnamed")
    with pytest.raises(GeneratorError, match="entry point missing = .*cannot import .*ModuleNotFoundError"):
        generator_class("missing")
    with pytest.raises(GeneratorError, match="declared by several plug-ins: distribution badplug 0.1.*otherplug 0.1"):
        generator_class("twice")
    with pytest.raises(VocoderError, match="wrongbase.*not a subclass of sourcetrace.vocoders.base.Vocoder"):
        vocoder_class("wrongbase")
    assert ATTRIBUTORS["knn"] is KNNAttributor  # a built-in name always means the built-in
    monkeypatch.undo()
    assert "notagenerator" not in GENERATORS  # rescanned once sys.path changed back


# ---- the conformance kit on the project's own classes -------------------------------------------
@parametrize_with_checks(attributor_checks(KNNAttributor, k=5),
                         attributor_checks(KNNAttributor, k=5, metric="euclidean", standardize=True),
                         attributor_checks(LinearProbeAttributor))
def test_builtin_attributors_conform(check, tmp_path):
    check(tmp_path)


def test_the_kit_names_every_contract_a_broken_attributor_breaks(tmp_path):
    """One pytest item per check, so a plug-in author sees every broken contract at once, not the first."""
    class Broken(LinearProbeAttributor):
        name = "Broken"  # not a lower-case word

        def params(self):
            return {**super().params(), "layers": 2}  # not a constructor parameter

        def predict_scores(self, X):
            scores = super().predict_scores(X)
            scores[:] = scores[0]  # every query gets the same answer
            return scores

    checks = list(attributor_checks(Broken))
    items = parametrize_with_checks(checks).mark.args[1]
    assert [item.id for item in items] == [f"Broken-{check.name}" for check in checks] and len(items) == 9
    failed = {}
    for check in checks:
        try:
            check(tmp_path / check.name)
        except ConformanceError as exc:
            failed[check.name] = str(exc).partition("Broken: ")[2]
    assert failed == {"check_declares_a_name_and_defaulted_parameters": "name 'Broken' is not a lower-case word",
                      "check_params_are_plain_json_constructor_parameters":
                          "params() {'C': 1.0, 'max_iter': 2000, 'seed': 0, 'layers': 2} are not constructor parameters",
                      "check_separates_separable_classes": "cannot separate well-separated classes"}
    with pytest.raises(ConformanceError) as failure:
        assert_conforms(checks, tmp_path)
    assert str(failure.value).splitlines()[0] == "3 checks failed:"
    assert [line.partition(": ")[0] for line in str(failure.value).splitlines()[1:]] == [f"Broken-{c}" for c in failed]


@parametrize_with_checks(extractor_checks(build_extractor("lfcc")), extractor_checks(build_extractor("mfcc")))
def test_builtin_extractors_conform(check, tmp_path):
    check(tmp_path)


def test_the_ssl_extractor_conforms(tiny_models, tmp_path):
    assert_conforms(extractor_checks(build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@2", device="cpu")), tmp_path)


def save_hifigan(vocoder, folder: Path) -> Path:
    torch.save({"generator": vocoder.generator.state_dict()}, folder / "generator_v1")  # jik876's format
    return folder / "generator_v1"


def save_nemo_hifigan(vocoder, folder: Path) -> Path:
    vocoder.model.save_to(str(folder / "tts_hifigan.nemo"))  # NeMo's archive
    return folder / "tts_hifigan.nemo"


@pytest.mark.tts
@parametrize_with_checks(vocoder_checks(vocoder_class("hifigan"), write_official=save_hifigan))
def test_builtin_vocoders_conform(check, tmp_path):
    check(tmp_path)


@pytest.mark.tts
@parametrize_with_checks(vocoder_checks(vocoder_class("nemo-hifigan"), write_official=save_nemo_hifigan))
def test_the_nemo_vocoder_conforms(check, tmp_path):
    pytest.importorskip("nemo", reason="the NeMo stack is installed by tools/setup.sh")
    check(tmp_path)


def lightning_checkpoint(generator, folder: Path) -> Path:
    """Matcha-TTS's official format, a Lightning checkpoint (which needs trust)."""
    torch.save({"state_dict": generator.model.state_dict(), "hyper_parameters": dict(generator.model.hparams),
                "pytorch-lightning_version": "2.0.0", "epoch": 0, "global_step": 0}, folder / "matcha.ckpt")
    return folder / "matcha.ckpt"


@pytest.mark.slow
@pytest.mark.tts
@parametrize_with_checks(generator_checks(generator_class("matcha"), write_official=lightning_checkpoint, trust=True))
def test_the_fastest_builtin_generator_conforms(check, tmp_path):
    """Matcha-TTS tiny (about 8 s in all): zero-init, synthesis, exact-step checkpoints, bit-identical
    resume, its official Lightning checkpoint."""
    pytest.importorskip("matcha", reason="the Matcha-TTS stack is installed by tools/setup.sh")
    check(tmp_path)


# ---- a plug-in from outside ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    """tests/toy_plugin installed by pip into a folder of its own (never into the environment)."""
    root = tmp_path_factory.mktemp("toyplug")
    shutil.copytree(TOY_PLUGIN, root / "src", ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(root / "site"), str(root / "src")], check=True, capture_output=True)
    return root / "site"


def sourcetrace(site: Path, *args: str) -> str:
    """The CLI in a fresh process that sees the plug-in only through PYTHONPATH."""
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *inherited]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sourcetrace.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"sourcetrace {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_plugin_from_outside_conforms(toy_site, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_site))
    assert GENERATORS.origin("toyarch") == ("distribution toyplug 0.1, entry point toyarch = "
                                            "toyplug.model:ToyGenerator (group sourcetrace.generators)")

    from toyplug.model import save_official

    def official(generator, folder):
        return save_official(generator, folder / "toy.pt")

    def official_vocoder(vocoder, folder):
        torch.save({"net": vocoder.net.state_dict()}, folder / "toyvoc.pt")
        return folder / "toyvoc.pt"

    toyarch = generator_class("toyarch")
    assert toyarch.from_config_name("tiny", 0).config["model"]["frames_per_symbol"] == 4  # the plug-in's own config
    with pytest.raises(GeneratorError, match="no config 'default' for toyarch in toyplug/configs; configs: tiny"):
        toyarch.from_config_name("default", 0)
    assert_conforms([*generator_checks(toyarch, write_official=official),
                     *vocoder_checks(vocoder_class("toyvoc"), write_official=official_vocoder),
                     *extractor_checks(build_extractor("toyext:320")), *attributor_checks(ATTRIBUTORS["toyknn"], k=5)],
                    tmp_path)
    assert AttributorSpec.parse("toyknn:k=3").build().k == 3


@pytest.mark.slow
def test_a_plugins_official_format_is_read_as_the_builtins_are(toy_site, tmp_path, monkeypatch, capsys):
    """The toy declares an official file format of its own (toyplug.model.ToyGenerator.official_formats):
    `synth FILE`, `train --init-from FILE` and `checkpoints verify` recognise its files with no
    word about the toy in sourcetrace, and refuse another model's file by the toy's name."""
    from sourcetrace.checkpoints.official import describe, inspect_file
    from sourcetrace.cli import main
    from sourcetrace.core.espeak import sentences
    from sourcetrace.corpus import Corpus
    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like
    from sourcetrace.datasets.prompts import Prompt, write_prompts
    from sourcetrace.generators import build_generator, checkpoint_architecture, load_generator

    monkeypatch.syspath_prepend(str(toy_site))
    from toyplug.model import save_official

    official = tmp_path / "release" / "toy.pt"
    official.parent.mkdir()
    trained = build_generator("toyarch", "tiny", seed=5)
    save_official(trained, official)
    assert describe(inspect_file(official)) == "torch zip holding a toy text-to-mel model"
    assert checkpoint_architecture(official) == "toyarch"  # told by the file: no --architecture

    write_prompts(tmp_path / "prompts.tsv", [Prompt(f"p{i:02d}", t) for i, t in enumerate(sentences(2, seed=3))])
    assert main(["synth", str(official), "--config", "tiny", "--prompts", str(tmp_path / "prompts.tsv"),
                 "--random-vocoder", "0", "--vocoder-config", "tiny", "--out", str(tmp_path / "corpus"),
                 "--device", "cpu"]) == 0
    assert {r.checkpoint for r in Corpus.read(tmp_path / "corpus").rows} == {"toyarch/pretrained"}

    lj = make_ljspeech_like(tmp_path / "lj", n_train=2, n_val=1, n_test=1, seed=0)
    assert main(["train", "toyarch", "--config", "tiny", "--init-from", str(official), "--steps", "1",
                 "--data", str(lj.root), "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                 "--no-tensorboard"]) == 0
    [finetuned] = (tmp_path / "run" / "checkpoints").iterdir()
    assert load_generator(finetuned).architecture == "toyarch"

    registry = tmp_path / "registry.toml"
    registry.write_text('[[checkpoint]]\nid = "toyarch/pretrained"\narchitecture = "toyarch"\nkind = "acoustic"\n'
                        'file = "toy.pt"\nformat = "torch"\nsource = "s"\nurl = ""\nsha256 = ""\ntrust = "unknown"\n')
    capsys.readouterr()
    assert main(["checkpoints", "verify", str(official.parent), "--registry", str(registry)]) == 0
    assert "1 ok, 0 bad, 0 missing" in capsys.readouterr().out
    torch.save({"generator": {"conv_pre.weight": torch.zeros(1), "ups.0.weight": torch.zeros(1)}}, official)
    assert main(["checkpoints", "verify", str(official.parent), "--registry", str(registry)]) == 1
    assert "problem: holds a jik876 HiFi-GAN generator, not a toy text-to-mel model" in capsys.readouterr().out


@pytest.mark.slow
def test_a_plugin_from_outside_trains_synthesises_and_is_benchmarked(toy_site, tmp_path):
    from sourcetrace.core.espeak import sentences
    from sourcetrace.corpus import Corpus
    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like
    from sourcetrace.datasets.prompts import Prompt, write_prompts

    assert "toyarch" not in GENERATORS  # only the subprocesses see the plug-in
    lj = make_ljspeech_like(tmp_path / "lj", n_train=4, n_val=1, n_test=1, seed=0)
    write_prompts(tmp_path / "prompts.tsv", [Prompt(f"p{i:02d}", t) for i, t in enumerate(sentences(10, seed=3))])
    assert "toyarch" in sourcetrace(toy_site, "train", "--help")
    run = tmp_path / "run"
    sourcetrace(toy_site, "train", "toyarch", "--config", "tiny", "--zero-init", "--schedule", "micro",
                "--run-dir", str(run))
    sourcetrace(toy_site, "train", "toyarch", "--config", "tiny", "--schedule", "micro", "--data", str(lj.root),
                "--run-dir", str(run), "--device", "cpu", "--no-tensorboard")
    steps = [2, 3, 4, 10, 11, 12, 18, 19, 20]  # checkpoints/schedules.toml [micro]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == (
        [f"step-{s:06d}" for s in steps] + ["zero-init-s1", "zero-init-s2", "zero-init-s3"])
    (tmp_path / "recipe.toml").write_text(
        '[corpus]\nprompts = "prompts.tsv"\nschedule = "micro"\nroles = ["zero-init", "scheduled"]\n'
        '[corpus.vocoders.toy]\nkind = "toyvoc"\nconfig = "tiny"\nseed = 0\n'
        '[corpus.architectures.toyarch]\nruns = "run"\nvocoder = "toy"\n')
    sourcetrace(toy_site, "synth", "--recipe", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "corpus"))
    corpus = Corpus.read(tmp_path / "corpus")
    assert len(corpus.rows) == 12 * 10
    assert {r.checkpoint for r in corpus.rows} == {f"toyarch/step-{s:06d}" for s in steps} | {
        f"toyarch/zero-init-s{s}" for s in (1, 2, 3)}
    assert {r.implementation for r in corpus.rows} == {"toyplug 0.1"} and {r.vocoder for r in corpus.rows} == {"toy"}
    # One architecture: attribution between its checkpoints only (the indomain protocol at checkpoint level).
    indomain = resources.files("sourcetrace.benchmark").joinpath("protocols", "indomain.toml").read_text()
    (tmp_path / "indomain.toml").write_text(indomain.replace('levels = ["checkpoint", "architecture"]',
                                                             'levels = ["checkpoint"]'))
    sourcetrace(toy_site, "bench", str(tmp_path / "corpus"), "--protocol", str(tmp_path / "indomain.toml"),
                "--extractor", "lfcc",
                "--extractor", "toyext:320", "--attributor", "toyknn:k=1", "--seeds", "0", "--device", "cpu",
                "--out", str(tmp_path / "results"), "--quiet")
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("indomain__*.json"))]
    assert sorted(r["features"]["extractor"] for r in results) == ["lfcc", "toyext-320"]
    for result in results:
        assert result["attributor"]["name"] == "toyknn" and 0.0 <= result["levels"]["checkpoint"]["mean"] <= 1.0
        # kNN's capability, not its name: the plug-in's neighbour voting gets F1-vs-k curves too
        assert "validation_f1_vs_k" in result["levels"]["checkpoint"]
