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
from sourcetrace.testing import ConformanceError, check_attributor, check_extractor, check_generator, check_vocoder
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
def test_builtin_attributors_conform():
    check_attributor(KNNAttributor, k=5)
    check_attributor(KNNAttributor, k=5, metric="euclidean", standardize=True)
    check_attributor(LinearProbeAttributor)


def test_the_kit_fails_an_attributor_that_breaks_the_contract():
    class Constant(LinearProbeAttributor):
        name = "constant"

        def predict_scores(self, X):
            scores = super().predict_scores(X)
            scores[:] = scores[0]  # every query gets the same answer
            return scores

    with pytest.raises(ConformanceError, match="Constant: cannot separate well-separated classes"):
        check_attributor(Constant)


def test_builtin_extractors_conform(tiny_models):
    check_extractor(build_extractor("lfcc"))
    check_extractor(build_extractor("mfcc"))
    check_extractor(build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@2", device="cpu"))


def save_hifigan(vocoder, folder: Path) -> Path:
    torch.save({"generator": vocoder.generator.state_dict()}, folder / "generator_v1")  # jik876's format
    return folder / "generator_v1"


def save_nemo_hifigan(vocoder, folder: Path) -> Path:
    vocoder.model.save_to(str(folder / "tts_hifigan.nemo"))  # NeMo's archive
    return folder / "tts_hifigan.nemo"


@pytest.mark.tts
@pytest.mark.parametrize("kind, write_official", [("hifigan", save_hifigan), ("nemo-hifigan", save_nemo_hifigan)])
def test_builtin_vocoders_conform(kind, write_official, tmp_path):
    if kind == "nemo-hifigan":
        pytest.importorskip("nemo", reason="the NeMo stack is installed by tools/setup.sh")
    check_vocoder(vocoder_class(kind), tmp_path, write_official=write_official)


@pytest.mark.slow
@pytest.mark.tts
def test_the_fastest_builtin_generator_conforms(tmp_path):
    """Matcha-TTS tiny (about 8 s): zero-init, synthesis, exact-step checkpoints, bit-identical
    resume, its official Lightning checkpoint (which needs trust)."""
    pytest.importorskip("matcha", reason="the Matcha-TTS stack is installed by tools/setup.sh")

    def lightning_checkpoint(generator, folder):
        torch.save({"state_dict": generator.model.state_dict(), "hyper_parameters": dict(generator.model.hparams),
                    "pytorch-lightning_version": "2.0.0", "epoch": 0, "global_step": 0}, folder / "matcha.ckpt")
        return folder / "matcha.ckpt"

    check_generator(generator_class("matcha"), tmp_path, write_official=lightning_checkpoint, trust=True)


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
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sourcetrace.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"sourcetrace {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_plugin_from_outside_conforms(toy_site, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_site))
    assert GENERATORS.origin("toyarch") == ("distribution toyplug 0.1, entry point toyarch = "
                                            "toyplug.model:ToyGenerator (group sourcetrace.generators)")

    def official(generator, folder):
        torch.save(generator.model.state_dict(), folder / "toy.pt")
        return folder / "toy.pt"

    def official_vocoder(vocoder, folder):
        torch.save({"net": vocoder.net.state_dict()}, folder / "toyvoc.pt")
        return folder / "toyvoc.pt"

    toyarch = generator_class("toyarch")
    assert toyarch.from_config_name("tiny", 0).config["model"]["frames_per_symbol"] == 4  # the plug-in's own config
    with pytest.raises(GeneratorError, match="no config 'default' for toyarch in toyplug/configs; configs: tiny"):
        toyarch.from_config_name("default", 0)
    check_generator(toyarch, tmp_path / "generator", write_official=official)
    check_vocoder(vocoder_class("toyvoc"), tmp_path / "vocoder", write_official=official_vocoder)
    check_extractor(build_extractor("toyext:320"))
    check_attributor(ATTRIBUTORS["toyknn"], k=5)
    assert AttributorSpec.parse("toyknn:k=3").build().k == 3


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
    assert {r["checkpoint"] for r in corpus.rows} == {f"toyarch/step-{s:06d}" for s in steps} | {
        f"toyarch/zero-init-s{s}" for s in (1, 2, 3)}
    assert {r["implementation"] for r in corpus.rows} == {"toyplug 0.1"} and {r["vocoder"] for r in corpus.rows} == {"toy"}
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
