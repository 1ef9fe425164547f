"""XTTS-v2 (coqui-tts `Xtts`), tiny config: the conformance kit, the official release folder written
with Coqui's own code and read back, and zero-shot synthesis that follows its reference clip."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch

from sourcetrace.generators import build_generator, generator_class, load_checkpoint
from sourcetrace.generators.base import GeneratorError
from sourcetrace.generators.synthesis import make_clips
from sourcetrace.testing import generator_checks, parametrize_with_checks, speech_data

pytest.importorskip("TTS")

pytestmark = [pytest.mark.slow, pytest.mark.tts]

SENTENCE = "A silver coin lay on the old pier."


@pytest.fixture(scope="module")
def lj(tmp_path_factory):
    return speech_data(tmp_path_factory.mktemp("xtts-data"))


@pytest.fixture(scope="module")
def references(lj) -> list[Path]:
    return [item.audio for item in lj.items("train")[:2]]


def write_release(generator, folder: Path, pickled_config: bool = False) -> Path:
    """The XTTS-v2 release layout, written by Coqui's code: model.pth by the Coqui trainer's
    `save_model` (or, `pickled_config`, as the first release did: the XttsConfig object pickled
    beside the state dict), config.json by Coqpit, vocab.json by `tokenizers`, speakers_xtts.pth
    (speaker name -> Coqui's conditioning latents of a clip)."""
    from trainer.io import save_model

    model = generator.model
    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.model_args.gpt_start_text_token = config.model_args.gpt_stop_text_token = None  # as released: from vocab.json
    config.save_json(str(folder / "config.json"))
    model.tokenizer.tokenizer.save(str(folder / "vocab.json"))
    if pickled_config:
        torch.save({"model": model.state_dict(), "config": model.config}, folder / "model.pth")
    else:
        save_model(model.config, model, folder / "model.pth", current_step=0, epoch=0)
    return folder / "model.pth"


@parametrize_with_checks(generator_checks(generator_class("xtts"), write_official=write_release))
def test_xtts_conforms(check, tmp_path):
    check(tmp_path)


def test_the_release_folder_loads_with_its_speakers_and_needs_trust_only_for_a_pickled_config(tmp_path, references,
                                                                                              monkeypatch):
    original = build_generator("xtts", "tiny", seed=3)
    model_file = write_release(original, tmp_path / "XTTS-v2")
    with original.inference():
        latents, embedding = original.model.get_conditioning_latents(str(references[0]))
    torch.save({"speaker-a": {"gpt_cond_latent": latents, "speaker_embedding": embedding}},
               tmp_path / "XTTS-v2" / "speakers_xtts.pth")


    def refuse(self, model_config):
        raise AssertionError("built the named config's random model before loading the release")

    monkeypatch.setattr(generator_class("xtts"), "build_model", refuse)  # config.json alone defines the model:
    loaded = load_checkpoint(None, model_file, config="default")  # nothing of the 467 M "default" is built
    assert loaded.architecture == "xtts" and list(loaded.speakers) == ["speaker-a"]
    original_state = original.model.state_dict()
    assert all(torch.equal(v, original_state[k]) for k, v in loaded.model.state_dict().items())
    waves = []
    for reference in ("speaker-a", references[0]):  # the stored speaker is that clip's voice
        loaded.use_reference(reference)
        torch.manual_seed(5)
        waves.append(loaded.synthesize(loaded.synthesis_ids(SENTENCE)))
    assert torch.equal(waves[0], waves[1])

    pickled = write_release(original, tmp_path / "XTTS-v1", pickled_config=True)
    with pytest.raises(GeneratorError, match="--trust"):
        load_checkpoint("xtts", pickled, config="tiny")
    trusted = load_checkpoint("xtts", pickled, config="tiny", trust=True)
    assert all(torch.equal(v, original_state[k]) for k, v in trusted.model.state_dict().items())
    (tmp_path / "XTTS-v1" / "vocab.json").unlink()
    with pytest.raises(GeneratorError, match="vocab.json: not found"):
        load_checkpoint("xtts", pickled, config="tiny", trust=True)


def test_clips_follow_their_reference_and_repeat_exactly(tmp_path, references):
    generator = build_generator("xtts", "tiny", seed=0)
    with pytest.raises(GeneratorError, match="reference clip"):
        generator.synthesize(generator.synthesis_ids(SENTENCE))
    clips = [tmp_path / f"{name}.wav" for name in ("a", "b", "a-again")]
    again = build_generator("xtts", "tiny", seed=0)  # a fresh instance: nothing carried over
    for maker, clip, reference in zip((generator, generator, again), clips, references + references[:1]):
        make_clips(maker, None, [SENTENCE], 11, [clip], references=[reference])  # same seed: only the voice differs
    a, b, a_again = (sf.read(clip)[0] for clip in clips)
    assert sf.info(str(clips[0])).samplerate == 24000
    assert a.tobytes() == a_again.tobytes()
    assert a.shape != b.shape or a.tobytes() != b.tobytes()
    with pytest.raises(GeneratorError, match="no such reference clip, nor a stored speaker .this model stores none"):
        generator.use_reference(tmp_path / "missing.wav")



def test_a_recipe_gives_each_prompt_a_reference_and_verify_checks_it(tmp_path, references, capsys, monkeypatch):
    """The recipe path: prompt i speaks in the voice of reference i mod n; the row records the
    reference as the recipe writes it; `corpus verify --recipe` catches a row with another one."""
    from sourcetrace.checkpoints.registry import load_schedule
    from sourcetrace.cli import main
    from sourcetrace.corpus import Corpus
    from sourcetrace.datasets.prompts import Prompt, write_prompts
    from sourcetrace.pipeline.recipe import load_recipe
    from sourcetrace.pipeline.regenerate import regenerate
    from sourcetrace.pipeline.training_runs import save_zero_inits

    for i, clip in enumerate(references):
        (tmp_path / f"ref{i}.wav").write_bytes(Path(clip).read_bytes())
    write_prompts(tmp_path / "prompts.tsv", [Prompt(f"P{i}", SENTENCE) for i in range(3)])
    save_zero_inits("xtts", "tiny", load_schedule("mini").zero_init_seeds, tmp_path / "runs/xtts")
    (tmp_path / "recipe.toml").write_text(
        '[corpus]\nprompts = "prompts.tsv"\nschedule = "mini"\nroles = ["zero-init"]\n'
        '[corpus.architectures.xtts]\nruns = "runs/xtts"\nreferences = ["ref0.wav", "ref1.wav"]\n')
    out = tmp_path / "corpus"
    report = regenerate(load_recipe(tmp_path / "recipe.toml"), out, progress=False, log=lambda _: None)
    assert report.failed == [] and report.made == 3 * 3
    corpus = Corpus.read(out)
    for checkpoint in {r.checkpoint for r in corpus.rows}:
        rows = sorted((r for r in corpus.rows if r.checkpoint == checkpoint), key=lambda r: r.prompt_id)
        assert [r.reference for r in rows] == ["ref0.wav", "ref1.wav", "ref0.wav"]
    monkeypatch.chdir(tmp_path)
    assert main(["corpus", "verify", "corpus", "--recipe", "recipe.toml"]) == 0
    corpus.rows[0] = replace(corpus.rows[0], reference="ref1.wav" if corpus.rows[0].reference == "ref0.wav" else "ref0.wav")
    corpus.write()
    capsys.readouterr()
    assert main(["corpus", "verify", "corpus", "--recipe", "recipe.toml"]) == 1
    assert "line 2: reference is " in capsys.readouterr().err


def test_a_recipe_reference_can_name_a_speaker_the_release_stores(tmp_path, references, monkeypatch):
    """`speaker:NAME` in a recipe's references is a voice of the release's speakers_xtts.pth: its
    clips equal those spoken from the clip that voice was made of, and rows record it as written."""
    from sourcetrace.corpus import Corpus
    from sourcetrace.datasets.prompts import Prompt, write_prompts
    from sourcetrace.pipeline.recipe import RecipeError, load_recipe
    from sourcetrace.pipeline.regenerate import regenerate

    original = build_generator("xtts", "tiny", seed=3)
    write_release(original, tmp_path / "XTTS-v2")
    with original.inference():
        latents, embedding = original.model.get_conditioning_latents(str(references[0]))
    torch.save({"speaker-a": {"gpt_cond_latent": latents, "speaker_embedding": embedding}},
               tmp_path / "XTTS-v2" / "speakers_xtts.pth")
    (tmp_path / "ref0.wav").write_bytes(Path(references[0]).read_bytes())
    write_prompts(tmp_path / "prompts.tsv", [Prompt(f"P{i}", SENTENCE) for i in range(2)])
    clips = {}
    for name, reference in (("stored", "speaker:speaker-a"), ("clip", "ref0.wav"), ("unknown", "speaker:nobody")):
        (tmp_path / f"{name}.toml").write_text(
            '[corpus]\nprompts = "prompts.tsv"\nschedule = "mini"\nroles = ["pretrained"]\n'
            f'[corpus.architectures.xtts]\npretrained = "XTTS-v2/model.pth"\nreferences = ["{reference}"]\n')
        failures = []
        report = regenerate(load_recipe(tmp_path / f"{name}.toml"), tmp_path / name, progress=False,
                            log=failures.append)
        if name == "unknown":  # the job is reported and skipped, naming what the release does store
            assert report.made == 0 and len(report.failed) == 1
            assert any("speaker:nobody: not a stored speaker (speakers_xtts.pth has 1: speaker-a)"
                       in line for line in failures), failures
            continue
        assert report.failed == [] and report.made == 2
        rows = sorted(Corpus.read(tmp_path / name).rows, key=lambda r: r.prompt_id)
        assert [r.reference for r in rows] == [reference] * 2
        clips[name] = [(tmp_path / name / r.path).read_bytes() for r in rows]
    assert clips["stored"] == clips["clip"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nobody").write_bytes(Path(references[0]).read_bytes())  # a clip of that name changes nothing:
    with pytest.raises(GeneratorError, match="speaker:nobody: not a stored speaker"):  # speaker: means stored
        load_checkpoint("xtts", tmp_path / "XTTS-v2" / "model.pth").use_reference("speaker:nobody")
    (tmp_path / "empty.toml").write_text(
        '[corpus]\nprompts = "prompts.tsv"\nschedule = "mini"\nroles = ["pretrained"]\n'
        '[corpus.architectures.xtts]\npretrained = "XTTS-v2/model.pth"\nreferences = ["speaker:"]\n')
    with pytest.raises(RecipeError, match=r"\[corpus.architectures.xtts\]: reference 'speaker:': `speaker:` needs"):
        load_recipe(tmp_path / "empty.toml")
