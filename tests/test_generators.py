"""All four architectures through one generic code path: zero-init, schedule, resume, fine-tune,
official formats, synthesis into a corpus that the benchmark accepts. Tiny configs, CPU."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("grad_tts", reason="the Grad-TTS stack is installed by tools/setup.sh")
pytest.importorskip("matcha", reason="the Matcha-TTS stack is installed by tools/setup.sh")
pytest.importorskip("nemo", reason="the NeMo stack is installed by tools/setup.sh")
pytest.importorskip("TTS", reason="the Coqui TTS stack is installed by tools/setup.sh")

from sourcetrace.cli import main
from sourcetrace.core.mel import MelConfig, mel_filterbank
from sourcetrace.core.plugins import STUDY_ARCHITECTURES
from sourcetrace.corpus import Corpus
from sourcetrace.datasets.espeak_datasets import make_hifitts_like, make_ljspeech_like
from sourcetrace.datasets.hifitts import HiFiTTS
from sourcetrace.datasets.prompts import Prompt, write_prompts
from sourcetrace.generators import (
    EndToEndGenerator,
    GeneratorError,
    build_generator,
    generator_class,
    load_generator,
)
from sourcetrace.generators.data import TrainingData
from sourcetrace.generators.training import train
from sourcetrace.vocoders import VocoderError
from sourcetrace.vocoders.hifigan import HiFiGAN, load_hifigan_config

pytestmark = [pytest.mark.slow, pytest.mark.tts]

# The study's four in depth; the architectures beyond it prove the same contract through the
# conformance kit in their own files (tests/test_vits_espnet.py, tests/test_xtts.py).
ARCHS = sorted(STUDY_ARCHITECTURES)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """One training-feature cache per module: FastPitch's pyin pitch is computed once per clip."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts-data")
    lj = make_ljspeech_like(root / "lj", n_train=6, n_val=1, n_test=3, seed=0)
    make_hifitts_like(root / "hifi", n_train=4)
    return lj, HiFiTTS(root / "hifi")


def weights(generator):
    return {k: v.clone() for k, v in generator.model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    np.testing.assert_allclose(mel_filterbank(MelConfig()).numpy(), ref, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_init_is_deterministic_per_seed(arch):
    a, b, c = (build_generator(arch, "tiny", seed) for seed in (1, 1, 2))
    assert same(weights(a), weights(b)) and not same(weights(a), weights(c))
    outputs = []
    for g in (a, b):
        torch.manual_seed(7)
        outputs.append(g.synthesize(g.synthesis_ids("The old sailor found a silver coin.")))
    expected_dims = 1 if isinstance(a, EndToEndGenerator) else 2  # a waveform, or (n_mels, frames)
    assert outputs[0].dim() == expected_dims and outputs[0].shape[-1] > 1 and torch.equal(outputs[0], outputs[1])
    if not isinstance(a, EndToEndGenerator):
        assert outputs[0].shape[0] == a.mel_config.n_mels


@pytest.mark.parametrize("arch", ARCHS)
def test_schedule_resume_and_fine_tune(arch, data, feature_cache, tmp_path):
    lj, hifi = data
    steps = [2, 3, 5]
    whole = build_generator(arch, "tiny", seed=1)
    report = train(whole, TrainingData(whole, lj.items("train"), feature_cache), tmp_path / "whole", steps,
                   batch_size=2, seed=0, tensorboard=False)
    assert sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()) == [
        "step-000002", "step-000003", "step-000005"]
    assert report.steps_run == 5
    # Interrupted after step 4 (last resume point: step 3, the scheduled checkpoint), then resumed
    # by a fresh process-like start: the step-5 weights are identical, bit for bit.
    first = build_generator(arch, "tiny", seed=1)
    train(first, TrainingData(first, lj.items("train"), feature_cache), tmp_path / "cut", steps, batch_size=2,
          seed=0, stop_after=4, tensorboard=False)
    assert not (tmp_path / "cut" / "checkpoints" / "step-000005").exists()
    again = build_generator(arch, "tiny", seed=99)  # weights come from the resume point, not this seed
    resumed = train(again, TrainingData(again, lj.items("train"), feature_cache), tmp_path / "cut", steps,
                    batch_size=2, seed=0, tensorboard=False)
    assert resumed.resumed_from == 3
    for name in ("step-000003", "step-000005"):
        assert ((tmp_path / "whole" / "checkpoints" / name / "model.safetensors").read_bytes()
                == (tmp_path / "cut" / "checkpoints" / name / "model.safetensors").read_bytes())
    # Fine-tune the step-5 model on the other speaker.
    base = load_generator(tmp_path / "whole" / "checkpoints" / "step-000005")
    before = weights(base)
    train(base, TrainingData(base, hifi.study_subset(n=4), feature_cache), tmp_path / "ft", [2], batch_size=2,
          seed=0, names=lambda step: "ft-9136", tensorboard=False)
    tuned = load_generator(tmp_path / "ft" / "checkpoints" / "ft-9136")
    assert not same(before, weights(tuned))
    meta = json.loads((tmp_path / "ft" / "checkpoints" / "ft-9136" / "generator.json").read_text())
    assert meta["architecture"] == arch and meta["step"] == 2


def test_resume_refuses_another_model(data, tmp_path):
    lj, _ = data
    g = build_generator("gradtts", "tiny", seed=1)
    train(g, TrainingData(g, lj.items("train")), tmp_path, [1], batch_size=2, seed=0, tensorboard=False)
    m = build_generator("matcha", "tiny", seed=1)
    with pytest.raises(GeneratorError, match="another model"):
        train(m, TrainingData(m, lj.items("train")), tmp_path, [2], batch_size=2, seed=0, tensorboard=False)


def test_official_formats(tmp_path):
    grad = build_generator("gradtts", "tiny", seed=1)
    torch.save(grad.model.state_dict(), tmp_path / "grad-tts.pt")  # the official format: a plain state dict
    other = build_generator("gradtts", "tiny", seed=2)
    other.load_official(tmp_path / "grad-tts.pt")
    assert same(weights(grad), weights(other))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GeneratorError, match="broken.pt: not a checkpoint"):
        other.load_official(tmp_path / "broken.pt")

    matcha = build_generator("matcha", "tiny", seed=1)
    lightning_like = {"state_dict": matcha.model.state_dict(), "hyper_parameters": dict(matcha.model.hparams),
                      "pytorch-lightning_version": "2.0.0", "epoch": 0, "global_step": 0}
    torch.save(lightning_like, tmp_path / "matcha.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "matcha.ckpt", weights_only=True)  # omegaconf objects inside: not weights-only
    fresh = build_generator("matcha", "tiny", seed=2)
    with pytest.raises(GeneratorError, match="needs full unpickling"):
        fresh.load_official(tmp_path / "matcha.ckpt")
    fresh.load_official(tmp_path / "matcha.ckpt", trust=True)
    assert same(weights(matcha), weights(fresh))

    fastpitch = build_generator("fastpitch", "tiny", seed=1)
    fastpitch.model.save_to(str(tmp_path / "tts_en_fastpitch_align.nemo"))  # NeMo's own archive format
    fresh = build_generator("fastpitch", "tiny", seed=2)
    fresh.load_official(tmp_path / "tts_en_fastpitch_align.nemo")
    assert same(weights(fastpitch), weights(fresh))
    ids = fresh.synthesis_ids("A silver coin.")
    assert ids == fastpitch.synthesis_ids("A silver coin.")  # the archive's own G2P dictionary
    with pytest.raises(GeneratorError, match="broken.pt: not a checkpoint"):
        fresh.load_official(tmp_path / "broken.pt")

    from TTS.tts.layers.vits.discriminator import VitsDiscriminator

    vits = build_generator("vits", "tiny", seed=1)
    # a file Coqui's trainer wrote from this config: its discriminator at Coqui's widths (tiny configs narrow ours)
    vits.model.disc = VitsDiscriminator(periods=vits.model.args.periods_multi_period_discriminator)
    (tmp_path / "coqui").mkdir()
    # Coqui's checkpoint layout: config as a plain dict, weights under "model"; config.json beside it.
    torch.save({"config": vits.model.config.to_dict(), "model": vits.model.state_dict(), "step": 0, "epoch": 0},
               tmp_path / "coqui" / "model_file.pth")
    fresh = build_generator("vits", "tiny", seed=2)
    with pytest.raises(GeneratorError, match="config.json"):
        fresh.load_official(tmp_path / "coqui" / "model_file.pth")
    vits.model.config.save_json(str(tmp_path / "coqui" / "config.json"))
    fresh.load_official(tmp_path / "coqui" / "model_file.pth")
    assert same(weights(vits), weights(fresh))
    assert fresh.text_to_ids("A silver coin.") == vits.text_to_ids("A silver coin.")

    vocoder = HiFiGAN(load_hifigan_config("tiny"), seed=3)
    torch.save({"generator": vocoder.generator.state_dict()}, tmp_path / "generator_v1")
    loaded = HiFiGAN.from_official(tmp_path / "generator_v1", config="tiny")
    mel = torch.randn(80, 20)
    assert torch.equal(vocoder(mel), loaded(mel)) and vocoder(mel).shape == (20 * 256,)
    with pytest.raises(VocoderError, match="not a jik876"):
        HiFiGAN.from_official(tmp_path / "grad-tts.pt", config="tiny")


def test_all_architectures_through_one_code_path_into_one_corpus(data, tmp_path, capsys):
    """zero-init, scheduled training, checkpoint reload and synthesis, all four architectures through
    the same CLI calls; the corpus is accepted by the benchmark."""
    lj, _ = data
    prompts = [Prompt(f"p{i:02d}", text) for i, text in enumerate(
        __import__("sourcetrace.core.espeak", fromlist=["x"]).sentences(10, seed=3))]
    write_prompts(tmp_path / "prompts.tsv", prompts)
    for arch in ARCHS:
        run = tmp_path / arch
        assert main(["train", arch, "--config", "tiny", "--zero-init", "--schedule", "mini", "--run-dir", str(run)]) == 0
        assert main(["train", arch, "--config", "tiny", "--data", str(lj.root), "--run-dir", str(run), "--steps", "1,2",
                     "--batch-size", "2", "--device", "cpu", "--no-tensorboard"]) == 0
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            "step-000001", "step-000002", "zero-init-s1", "zero-init-s2", "zero-init-s3"]  # exactly the schedule's
        vocoder = [] if issubclass(generator_class(arch), EndToEndGenerator) else ["--random-vocoder", "0", "--vocoder-config", "tiny"]
        for ckpt in ("zero-init-s1", "step-000002"):
            assert main(["synth", str(run / "checkpoints" / ckpt), "--prompts", str(tmp_path / "prompts.tsv"),
                         "--out", str(tmp_path / "corpus"), *vocoder]) == 0
    corpus = Corpus.read(tmp_path / "corpus")
    assert len(corpus.rows) == len(ARCHS) * 2 * 10
    assert {r.checkpoint for r in corpus.rows} == {f"{a}/{c}" for a in ARCHS for c in ("zero-init-s1", "step-000002")}
    by_arch = {r.architecture: r for r in corpus.rows}
    assert by_arch["vits"].vocoder == "" and by_arch["fastpitch"].vocoder == "nemo-hifigan-tiny-random-s0"
    assert by_arch["fastpitch"].implementation.startswith("nemo-toolkit")
    for row in corpus.rows:
        assert row.sample_rate == 22050 and row.vocoder_swapped is False and len(row.checkpoint_sha256) == 64
    # Resumable and deterministic: a deleted clip is remade with the same bytes, the rest skipped.
    victim_row = next(r for r in corpus.rows if r.architecture == "fastpitch")
    victim = tmp_path / "corpus" / victim_row.path
    original = victim.read_bytes()
    victim.unlink()
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "fastpitch" / "checkpoints" / victim_row.checkpoint.split("/")[1]),
                 "--prompts", str(tmp_path / "prompts.tsv"), "--out", str(tmp_path / "corpus"),
                 "--random-vocoder", "0", "--vocoder-config", "tiny"]) == 0
    assert "1 clips made, 9 already there" in capsys.readouterr().out
    assert victim.read_bytes() == original
    code = main(["bench", str(tmp_path / "corpus"), "--protocol", "indomain", "--extractor", "lfcc",
                 "--attributor", "knn:k=1", "--seeds", "0", "--no-figures", "--out", str(tmp_path / "results"),
                 "--quiet"])
    assert code == 0 and len(list((tmp_path / "results").glob("indomain__*.json"))) == 1


def test_an_end_to_end_model_has_no_vocoder_to_swap(tmp_path, capsys):
    g = build_generator("vits", "tiny", seed=1)
    g.save(tmp_path / "ckpt", 0, role="zero-init")
    write_prompts(tmp_path / "p.tsv", [Prompt("a", "Hello.")])
    assert main(["synth", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "p.tsv"), "--out", str(tmp_path / "c"),
                 "--random-vocoder", "0"]) == 2
    assert "end to end" in capsys.readouterr().err


def test_synth_needs_a_vocoder_for_mel_models(tmp_path, capsys):
    g = build_generator("gradtts", "tiny", seed=1)
    g.save(tmp_path / "ckpt", 0, role="zero-init")
    write_prompts(tmp_path / "p.tsv", [Prompt("a", "Hello.")])
    assert main(["synth", str(tmp_path / "ckpt"), "--prompts", str(tmp_path / "p.tsv"), "--out", str(tmp_path / "c")]) == 2
    assert "--vocoder-weights" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "ckpt")
    with pytest.raises(GeneratorError, match="not a sourcetrace checkpoint"):
        load_generator(tmp_path / "ckpt")


def test_fastpitch_default_speaks_numbers_and_abbreviations_quietly(capfd):
    """The shipped FastPitch config normalises text with NeMo's English normaliser (LJSpeech
    whitelist), as the official model was trained, for training and synthesis alike, without a log
    line per sentence; the tiny config has it off."""
    written, spoken = "Dr. Smith paid $5 on May 3.", "doctor Smith paid five dollars on may third."
    fastpitch = build_generator("fastpitch", "default", 0)
    assert fastpitch.synthesis_ids(written) == fastpitch.synthesis_ids(spoken)
    assert fastpitch.text_to_ids(written) == fastpitch.text_to_ids(spoken)
    assert "NeMo-text-processing" not in capfd.readouterr().err
    tiny = build_generator("fastpitch", "tiny", 0)
    assert tiny.synthesis_ids(written) != tiny.synthesis_ids(spoken)


def test_unknown_architecture_and_config():
    with pytest.raises(GeneratorError, match="unknown architecture"):
        build_generator("tacotron", "tiny", 0)
    with pytest.raises(GeneratorError, match="no config 'huge'"):
        build_generator("gradtts", "huge", 0)


def test_tensorboard_gets_losses_mel_and_audio(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lj, _ = data
    g = build_generator("gradtts", "tiny", seed=1)
    vocoder = HiFiGAN(load_hifigan_config("tiny"), seed=0)
    train(g, TrainingData(g, lj.items("train")), tmp_path, [1, 2], batch_size=2, seed=0,
          sample_vocoder=lambda mel: vocoder(mel, g.mel_config))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"audio": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"loss/total", "loss/diffusion"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2]
    assert "sample/mel" in tags["images"] and "sample/audio" in tags["audio"]
    assert [e.step for e in events.Audio("sample/audio")] == [1, 2]


def test_cli_mini_schedule_leaves_exactly_the_scheduled_checkpoints(data, tmp_path, capsys):
    """The named `mini` schedule end to end through `sourcetrace train` (about 15 s on a CPU)."""
    from sourcetrace.checkpoints.registry import load_schedule

    lj, _ = data
    assert main(["train", "gradtts", "--data", str(lj.root), "--run-dir", str(tmp_path / "run"), "--config", "tiny",
                 "--schedule", "mini", "--batch-size", "2", "--device", "cpu", "--no-tensorboard"]) == 0
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == [f"step-{s:06d}" for s in load_schedule("mini").steps]
    cached = sorted((tmp_path / "run" / "features").rglob("*.npz"))
    assert len(cached) == len(lj.items("train"))  # one feature file per training clip, reused on resume
    assert main(["train", "gradtts", "--data", str(lj.root), "--run-dir", str(tmp_path / "run"), "--config", "tiny",
                 "--schedule", "mini", "--batch-size", "2", "--device", "cpu", "--no-tensorboard"]) == 0
    assert "0 steps from step 200" in capsys.readouterr().out  # a finished run does nothing


def test_resume_refuses_changed_run_options(data, tmp_path):
    lj, _ = data
    g = build_generator("gradtts", "tiny", seed=1)
    train(g, TrainingData(g, lj.items("train")), tmp_path, [1, 3], batch_size=2, seed=0, stop_after=1,
          tensorboard=False)
    with pytest.raises(GeneratorError, match="would not reproduce the run"):
        train(g, TrainingData(g, lj.items("train")), tmp_path, [1, 3], batch_size=3, seed=0, tensorboard=False)


def test_the_tiny_vits_discriminator_is_coquis_narrowed_and_the_default_is_coquis_own():
    """Tiny configs divide the discriminator's widths (Coqui has no field for them); every layer keeps
    Coqui's kernel, stride, padding and group pattern, and the study's config is left as Coqui builds it."""
    from TTS.tts.layers.vits.discriminator import VitsDiscriminator

    from sourcetrace.generators.vits import narrow_discriminator

    tiny = build_generator("vits", "tiny", seed=0).model.disc
    coqui = VitsDiscriminator(periods=[2, 3])
    assert len(tiny.nets) == len(coqui.nets) == 3
    for small, full in zip(tiny.nets, coqui.nets, strict=True):
        for a, b in zip([*small.convs, small.conv_post], [*full.convs, full.conv_post], strict=True):
            assert (a.kernel_size, a.stride, a.padding) == (b.kernel_size, b.stride, b.padding)
            assert a.out_channels == (1 if b.out_channels == 1 else b.out_channels // 16)
            assert a.groups == max(1, b.groups // 16) and hasattr(a, "parametrizations")  # weight norm kept
    assert sum(p.numel() for p in tiny.parameters()) * 150 < sum(p.numel() for p in coqui.parameters())
    with pytest.raises(GeneratorError, match="without a whole channel per group"):
        narrow_discriminator(VitsDiscriminator(periods=[2]), 2048)
    from sourcetrace.generators.base import load_config

    default = load_config("vits", "default")
    assert "discriminator_width_divisor" not in default["model"]
