"""Official checkpoint files, written by the official packages (tiny models, random weights), through
every place that takes a checkpoint: `synth CHECKPOINT`, `train --init-from`, recipes and
`checkpoints verify`; the one trust rule; files that are truncated, of another model or that would
run code (never run: a marker file proves it)."""

import os
import pickle
import shutil
import warnings

import pytest
import torch

pytest.importorskip("nemo", reason="the TTS stacks are installed by tools/setup.sh")
pytest.importorskip("TTS", reason="the TTS stacks are installed by tools/setup.sh")

from sourcetrace.checkpoints.registry import verify_folder
from sourcetrace.cli import main
from sourcetrace.corpus import Corpus
from sourcetrace.datasets.prompts import Prompt, write_prompts
from sourcetrace.generators import GeneratorError, build_generator, checkpoint_architecture, load_checkpoint
from sourcetrace.vocoders import VocoderError, load_vocoder

pytestmark = [pytest.mark.slow, pytest.mark.tts]

MARKER_NAME = "pwned"


class RunsCode:
    """What a hostile checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The registry's twelve files in their published formats, each written by its own package."""
    import lightning.pytorch as pl
    from trainer.io import save_model
    from TTS.tts.layers.vits.discriminator import VitsDiscriminator

    root = tmp_path_factory.mktemp("official")
    fastpitch = build_generator("fastpitch", "tiny", seed=1)
    fastpitch.model.save_to(str(root / "tts_en_fastpitch_align.nemo"))             # NeMo's ModelPT.save_to
    load_vocoder("nemo-hifigan", config="tiny", seed=1).model.save_to(str(root / "tts_hifigan.nemo"))
    from test_dle_hifigan import save_dle  # DeepLearningExamples' Checkpointer layout

    save_dle(load_vocoder("dle-hifigan", config="tiny", seed=1), root)               # hifigan_gen_checkpoint_10000_ft.pt
    vits = build_generator("vits", "tiny", seed=1)
    vits.model.disc = VitsDiscriminator(periods=vits.model.args.periods_multi_period_discriminator)  # Coqui's widths
    save_model(vits.model.config, vits.model, root / "model_file.pth", current_step=0, epoch=0)  # Coqui's trainer
    vits.model.config.save_json(str(root / "config.json"))
    grad = build_generator("gradtts", "tiny", seed=1)
    torch.save(grad.model.state_dict(), root / "grad-tts.pt")                        # Grad-TTS's train.py
    hifigan = load_vocoder("hifigan", config="tiny", seed=1)
    # jik876's save_checkpoint, as in 2020 (torch < 1.6): the legacy pickle format
    torch.save({"generator": hifigan.generator.state_dict()}, root / "hifigan.pt", _use_new_zipfile_serialization=False)
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "vocoders", "configs", "hifigan-tiny.json"),
                root / "hifigan-config.json")
    torch.save({"generator": load_vocoder("hifigan", config="tiny", seed=2).generator.state_dict()},
               root / "hifigan_T2_v1")                                             # the name matcha.cli saves it under
    matcha = build_generator("matcha", "tiny", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.strategy.connect(matcha.model)
        trainer.save_checkpoint(root / "matcha_ljspeech.ckpt")                     # Lightning's own writer
    # Beyond the study: ESPnet2's packed model (its own pack_funcs) and the XTTS-v2 release folder (Coqui's writers)
    from test_vits_espnet import pack_model
    from test_xtts import write_release

    pack_model(build_generator("vits-espnet", "tiny", seed=1), root,
               name="tts_train_vits_raw_phn_tacotron_g2p_en_no_space_train.total_count.ave.zip")
    write_release(build_generator("xtts", "tiny", seed=1), root / "XTTS-v2")
    from test_vocoder_families import save_bigvgan, save_vocos  # each package's own layout

    for kind, save, folder in (("vocos", save_vocos, "vocos-mel-24khz"),
                               ("bigvgan", save_bigvgan, "bigvgan_v2_22khz_80band_fmax8k_256x")):
        (root / folder).mkdir()
        save(load_vocoder(kind, config="tiny", seed=1), root / folder)
    write_prompts(root / "prompts.tsv", [Prompt("p0", "A silver coin."), Prompt("p1", "The cat sat.")])
    return root


def _copy(official, tmp_path):
    folder = tmp_path / "official"
    shutil.copytree(official, folder)
    return folder


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_verify_passes_every_official_file_and_names_what_needs_trust(official, capsys):
    rows = {r.entry.id: r for r in verify_folder(official)}
    assert {k: r.status for k, r in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows["vocoder/hifigan-matcha"].path.name == "hifigan_T2_v1"  # the alias is accepted
    assert "--trust" in rows["matcha/pretrained"].note and "omegaconf" in rows["matcha/pretrained"].note
    assert [k for k, r in rows.items() if r.note] == ["matcha/pretrained"]
    assert main(["checkpoints", "verify", str(official)]) == 0
    assert "12 ok, 0 bad, 0 missing" in capsys.readouterr().out


def test_verify_never_says_ok_for_a_truncated_foreign_or_hostile_file(official, tmp_path, capsys):
    folder = _copy(official, tmp_path)
    _truncate(folder / "hifigan.pt")                                   # legacy pickle, cut in its storages
    _truncate(folder / "tts_hifigan.nemo")                             # tarfile.ReadError before
    _truncate(folder / "tts_en_fastpitch_align.nemo", keep=0.95)       # a member's bytes cut
    shutil.copy(folder / "hifigan_T2_v1", folder / "grad-tts.pt")      # another model's file, renamed
    marker = tmp_path / MARKER_NAME
    (folder / "matcha_ljspeech.ckpt").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))  # ~100 bytes
    torch.save({"model": RunsCode(marker)}, folder / "model_file.pth")  # a torch zip that would run code
    assert main(["checkpoints", "verify", str(folder)]) == 1
    out = capsys.readouterr().out
    rows = {r.entry.id: r for r in verify_folder(folder)}
    assert not marker.exists()
    assert [k for k, r in rows.items() if r.status != "bad"] == [  # left intact
        "vocoder/hifigan-dle", "vocoder/hifigan-matcha", "vits-espnet/pretrained", "xtts/pretrained", "vocoder/vocos-mel-24khz",
        "vocoder/bigvgan-v2-22khz-80band-fmax8k-256x"], out
    assert "truncated" in rows["vocoder/hifigan-gradtts"].problems[0]
    assert "truncated" in rows["vocoder/hifigan-nemo"].problems[0]
    assert "truncated" in rows["fastpitch/pretrained"].problems[0]
    assert "holds a jik876 HiFi-GAN generator, not a Grad-TTS model" in rows["gradtts/pretrained"].problems[0]
    assert "posix.system" in rows["matcha/pretrained"].problems[0] and "plain pickle" in rows["matcha/pretrained"].problems[0]
    assert "posix.system" in rows["vits/pretrained"].problems[0]
    assert "--trust" not in out and "Traceback" not in out
    assert "6 ok, 6 bad, 0 missing" in out


def test_synth_takes_official_files_and_tells_their_architecture(official, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["synth", str(official / "grad-tts.pt"), "--config", "tiny", "--prompts", str(official / "prompts.tsv"),
                 "--out", str(out), "--random-vocoder", "0", "--device", "cpu"]) == 0
    assert main(["synth", str(official / "model_file.pth"), "--prompts", str(official / "prompts.tsv"),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert main(["synth", str(official / "tts_en_fastpitch_align.nemo"), "--prompts", str(official / "prompts.tsv"),
                 "--out", str(out), "--vocoder-weights", str(official / "tts_hifigan.nemo"), "--device", "cpu"]) == 0
    capsys.readouterr()
    matcha = ["synth", str(official / "matcha_ljspeech.ckpt"), "--prompts", str(official / "prompts.tsv"), "--out",
              str(out), "--vocoder-weights", str(official / "hifigan_T2_v1"), "--vocoder-config", "tiny", "--device", "cpu"]
    assert main(matcha) == 2
    err = capsys.readouterr().err
    assert "matcha_ljspeech.ckpt: needs full unpickling" in err and "--trust (recipe: trust = true)" in err
    assert "--trust-checkpoint" not in err
    assert main([*matcha, "--trust"]) == 0
    rows = Corpus.read(out).rows
    assert {r.checkpoint for r in rows} == {"gradtts/pretrained", "vits/pretrained", "fastpitch/pretrained",
                                               "matcha/pretrained"}
    assert {r.checkpoint_sha256 for r in rows if r.architecture == "gradtts"} == {inspect_sha(official / "grad-tts.pt")}
    # The generic vocoder name works too: generator_v1 when only hifigan_T2_v1 is there.
    assert load_vocoder("hifigan", str(official / "generator_v1"), "tiny").name == "hifigan_T2_v1"


ALIAS_RECIPE = """[corpus]
prompts = "prompts.tsv"
schedule = "mini"
roles = ["pretrained"]
swap_roles = []
[corpus.architectures.gradtts]
pretrained = "grad-tts-ljspeech.pt"
pretrained_config = "tiny"
vocoder = "v"
[corpus.vocoders.v]
kind = "hifigan"
config = "tiny"
seed = 0
"""


def test_synth_hashes_the_file_an_alias_names_and_pins_the_thread_count(tmp_path, monkeypatch, capsys):
    """A checkpoint given by another registry name of its file loads that file and records its hash;
    `--threads` (default OMP_NUM_THREADS) sets torch's thread count, which the summary states."""
    from importlib import resources

    from sourcetrace.checkpoints import registry

    text = resources.files(registry.__package__).joinpath("registry.toml").read_text(encoding="utf-8")
    assert text.count('file = "grad-tts.pt"\n') == 1
    (tmp_path / "registry.toml").write_text(text.replace('file = "grad-tts.pt"\n',
                                                         'file = "grad-tts.pt"\naliases = ["grad-tts-ljspeech.pt"]\n'))
    load_registry = registry.load_registry
    monkeypatch.setattr(registry, "load_registry", lambda path=None: load_registry(path or tmp_path / "registry.toml"))
    torch.save(build_generator("gradtts", "tiny", seed=1).model.state_dict(), tmp_path / "grad-tts.pt")
    write_prompts(tmp_path / "prompts.tsv", [Prompt("p0", "A silver coin.")])
    (tmp_path / "recipe.toml").write_text(ALIAS_RECIPE)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert main(["synth", str(tmp_path / "grad-tts-ljspeech.pt"), "--config", "tiny", "--prompts",
                 str(tmp_path / "prompts.tsv"), "--out", str(tmp_path / "one"), "--random-vocoder", "0",
                 "--device", "cpu"]) == 0
    assert "1 clips made, 0 already there, 2 CPU threads" in capsys.readouterr().out
    assert torch.get_num_threads() == 2
    assert main(["synth", "--recipe", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "all"), "--device", "cpu",
                 "--threads", "3"]) == 0
    assert "0 job(s) failed, 3 CPU threads; manifest written" in capsys.readouterr().out
    assert torch.get_num_threads() == 3
    for corpus in ("one", "all"):
        assert [r.checkpoint_sha256 for r in Corpus.read(tmp_path / corpus).rows] == [inspect_sha(tmp_path / "grad-tts.pt")]
    assert main(["synth", "--recipe", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "x"), "--threads", "0"]) == 2
    assert "threads must be a positive integer, got 0" in capsys.readouterr().err


def inspect_sha(path):
    from sourcetrace.core.fileio import sha256_file

    return sha256_file(path)


def test_a_file_that_does_not_tell_its_architecture_needs_architecture(tmp_path, capsys):
    grad = build_generator("gradtts", "tiny", seed=1)
    state = {k.replace("encoder.", "enc."): v for k, v in grad.model.state_dict().items()}  # keys of no known layout
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(GeneratorError, match="does not tell its architecture: give --architecture"):
        checkpoint_architecture(tmp_path / "renamed.pt")
    assert checkpoint_architecture(tmp_path / "renamed.pt", "gradtts") == "gradtts"
    assert main(["synth", str(tmp_path / "renamed.pt"), "--prompts", "p.tsv", "--out", str(tmp_path / "c"),
                 "--architecture", "gradtts", "--config", "tiny", "--random-vocoder", "0"]) == 2
    assert "renamed.pt: does not fit config 'tiny'" in capsys.readouterr().err  # read as Grad-TTS, as asked
    with pytest.raises(GeneratorError, match="holds a jik876 HiFi-GAN generator, not a generator"):
        checkpoint_architecture(_vocoder_file(tmp_path))


def _vocoder_file(tmp_path):
    path = tmp_path / "generator_v1"
    torch.save({"generator": load_vocoder("hifigan", config="tiny", seed=0).generator.state_dict()}, path)
    return path


@pytest.mark.parametrize("trust", [False, True])
def test_a_pickle_that_would_run_code_never_runs(official, tmp_path, trust, capsys):
    marker = tmp_path / MARKER_NAME
    hostile = tmp_path / "matcha_ljspeech.ckpt"
    hostile.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    zipped = tmp_path / "grad-tts.pt"
    torch.save({"encoder.proj_w.x": RunsCode(marker)}, zipped)
    for path, arch in ((hostile, "matcha"), (zipped, "gradtts"), (zipped, "matcha")):
        with pytest.raises(GeneratorError, match="posix.system") as info:
            load_checkpoint(arch, path, "tiny", trust=trust)
        assert "--trust" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(VocoderError, match="posix.system"):
        load_vocoder("hifigan", str(zipped), "tiny")
    command = ["synth", str(hostile), "--architecture", "matcha", "--prompts", str(official / "prompts.tsv"),
               "--out", str(tmp_path / "c"), "--random-vocoder", "0"]
    assert main(command + (["--trust"] if trust else [])) == 2
    assert main(["checkpoints", "verify", str(tmp_path)]) == 1
    assert "posix.system" in capsys.readouterr().out
    assert not marker.exists()


class CallsAllowListedModuleFunction:
    """A pickle whose callable lives in a module the VITS format's classes come from, but is not one
    of those classes (coqpit.coqpit._rgetattr follows dotted names: a way to reach os.system)."""

    def __reduce__(self):
        import coqpit.coqpit

        return coqpit.coqpit._rgetattr, ("x", "y")


def test_trust_admits_classes_of_the_official_format_never_other_callables(tmp_path):
    path = tmp_path / "model_file.pth"
    torch.save({"model": {}, "config": CallsAllowListedModuleFunction()}, path)
    with pytest.raises(GeneratorError, match="coqpit.coqpit._rgetattr") as info:
        load_checkpoint("vits", path, "tiny", trust=True)
    assert "--trust" not in str(info.value)


def test_torch_load_is_never_handed_a_file_whose_pickles_were_not_read(tmp_path):
    """torch.load also reads legacy tar archives and TorchScript zips (constants.pkl, code): both are
    refused before torch.load, with or without trust."""
    import tarfile

    from sourcetrace.checkpoints.official import OfficialFileError, load_torch_file

    inner = tmp_path / "model_weights.ckpt"
    torch.save({"w": torch.zeros(2)}, inner)
    (tmp_path / "model_config.yaml").write_text("target: x\n")
    archive = tmp_path / "grad-tts.pt"
    with tarfile.open(archive, "w") as tar:
        for member in (inner, tmp_path / "model_config.yaml"):
            tar.add(member, arcname=member.name)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    for path in (archive, scripted):
        with pytest.raises(OfficialFileError, match="not a torch.save file"):
            load_torch_file(path, "gradtts", trust=True)


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("name,arch", [("matcha_ljspeech.ckpt", "matcha"), ("model_file.pth", "vits")])
def test_a_truncated_file_is_named_truncated_and_trust_is_not_suggested(official, tmp_path, name, arch, trust):
    folder = _copy(official, tmp_path)
    _truncate(folder / name)
    with pytest.raises(GeneratorError, match=f"{name}: truncated") as info:
        load_checkpoint(arch, folder / name, "tiny", trust=trust)
    assert "--trust" not in str(info.value)


def test_trust_is_never_suggested_for_a_foreign_file(official):
    for path, arch, holds in ((official / "grad-tts.pt", "matcha", "a Grad-TTS model"),
                              (official / "tts_hifigan.nemo", "fastpitch", "a NeMo HiFi-GAN vocoder"),
                              (official / "matcha_ljspeech.ckpt", "vits", "a Matcha-TTS model")):
        with pytest.raises(GeneratorError, match=f"holds {holds}, not") as info:
            load_checkpoint(arch, path, "tiny", trust=True)
        assert "--trust" not in str(info.value)
    with pytest.raises(VocoderError, match="tts_en_fastpitch_align.nemo: holds a NeMo FastPitch model, not a NeMo HiFi-GAN"):
        load_vocoder("nemo-hifigan", str(official / "tts_en_fastpitch_align.nemo"))


def test_train_init_from_an_official_file(official, tmp_path, capsys):
    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like

    lj = make_ljspeech_like(tmp_path / "lj", 4, 1, 1)
    command = ["train", "matcha", "--data", str(lj.root), "--init-from", str(official / "matcha_ljspeech.ckpt"),
               "--run-dir", str(tmp_path / "ft"), "--config", "tiny", "--schedule", "mini", "--steps", "1",
               "--no-tensorboard", "--device", "cpu"]
    assert main(command) == 2
    assert "--trust (recipe: trust = true)" in capsys.readouterr().err
    assert main([*command, "--trust"]) == 0
    assert (tmp_path / "ft" / "checkpoints" / "ft-9136" / "model.safetensors").is_file()
    assert main(["train", "gradtts", "--data", str(lj.root), "--init-from", str(official / "matcha_ljspeech.ckpt"),
                 "--run-dir", str(tmp_path / "x"), "--config", "tiny", "--steps", "1", "--trust"]) == 2
    assert "holds a Matcha-TTS model, not a Grad-TTS model" in capsys.readouterr().err


RECIPE = """[corpus]
prompts = "official/prompts.tsv"
schedule = "mini"
roles = ["pretrained"]
swap_roles = []
[corpus.architectures.fastpitch]
pretrained = "official/{fastpitch}"
vocoder = "nemo"
[corpus.architectures.gradtts]
pretrained = "official/grad-tts.pt"
pretrained_config = "tiny"
vocoder = "jik"
[corpus.architectures.vits]
pretrained = "official/model_file.pth"
[corpus.vocoders.nemo]
kind = "nemo-hifigan"
weights = "official/tts_hifigan.nemo"
[corpus.vocoders.jik]
kind = "hifigan"
weights = "official/hifigan.pt"
config = "{config}"
"""


def test_recipe_paths_resolve_against_the_recipe_folder_and_bad_jobs_are_listed(official, tmp_path, monkeypatch, capsys):
    study = tmp_path / "study"
    shutil.copytree(official, study / "official")
    (study / "recipe.toml").write_text(RECIPE.format(fastpitch="tts_en_fastpitch_align.nemo",
                                                     config="official/hifigan-config.json"))
    monkeypatch.chdir(tmp_path)  # run from elsewhere: every path is the recipe folder's
    assert main(["synth", "--recipe", str(study / "recipe.toml"), "--out", str(tmp_path / "good"), "--device", "cpu"]) == 0
    assert len(Corpus.read(tmp_path / "good").rows) == 3 * 2

    # The vocoder's file given as FastPitch, and a vocoder that fails at its first synthesis
    # (a 16 kHz config for 22 kHz mels): each job is reported and skipped, VITS's clips are kept.
    config = (study / "official" / "hifigan-config.json").read_text().replace('"sampling_rate": 22050', '"sampling_rate": 16000')
    (study / "official" / "hifigan-16k.json").write_text(config)
    (study / "bad.toml").write_text(RECIPE.format(fastpitch="tts_hifigan.nemo", config="official/hifigan-16k.json"))
    capsys.readouterr()
    assert main(["synth", "--recipe", str(study / "bad.toml"), "--out", str(tmp_path / "bad"), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "0 clips made" not in captured.out and "2 job(s) failed" in captured.out and "rerun, or wait" not in captured.out
    failures = [line for line in captured.err.splitlines() if line.startswith("[synth] failed:")]
    assert len(failures) == 2
    assert "fastpitch/pretrained" in failures[0] and "holds a NeMo HiFi-GAN vocoder, not a NeMo FastPitch model" in failures[0]
    assert "gradtts/pretrained" in failures[1] and "failed at synthesis" in failures[1] and "16000 Hz" in failures[1]
    assert len(list((tmp_path / "bad" / "audio").rglob("*.wav"))) == 2  # VITS's clips
