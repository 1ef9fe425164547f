"""The Vocos and BigVGAN vocoder kinds, vocoder families, and the mel re-analysis Vocos needs."""

import json

import numpy as np
import pytest
import soxr
import torch

pytest.importorskip("vocos", reason="the vocos package is installed by tools/setup.sh")
pytest.importorskip("bigvgan", reason="the bigvgan package is installed by tools/setup.sh")

from sourcetrace.core.audio import load_audio
from sourcetrace.core.espeak import speak
from sourcetrace.core.mel import MelConfig, mel_spectrogram, reanalyse_mel, reanalysed_frames
from sourcetrace.testing import parametrize_with_checks, vocoder_checks
from sourcetrace.vocoders import VOCODERS, VocoderError, load_vocoder, vocoder_class

pytestmark = pytest.mark.tts

STUDY = MelConfig()  # the 22.05 kHz, 80-band mels of FastPitch, Grad-TTS and Matcha-TTS (jik876 framing)


def save_vocos(vocoder, folder):
    """charactr's Hugging Face layout: config.yaml + the Vocos module's state dict in pytorch_model.bin."""
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump(vocoder.config))
    torch.save(vocoder.model.state_dict(), folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def save_bigvgan(vocoder, folder):
    """The bigvgan package's own save: config.json + {"generator": state dict} in bigvgan_generator.pt."""
    vocoder.generator._save_pretrained(folder)
    return folder / "bigvgan_generator.pt"


@pytest.fixture(scope="module")
def speech():
    """espeak-ng speech at 22.05 kHz."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.wav"
        speak("The quick brown fox jumps over the lazy dog, twice.", path)
        return load_audio(path, 22050).astype(np.float32)


@parametrize_with_checks(vocoder_checks(vocoder_class("vocos"), write_official=save_vocos),
                         vocoder_checks(vocoder_class("bigvgan"), write_official=save_bigvgan))
def test_new_vocoder_kinds_conform(check, tmp_path):
    check(tmp_path)


@pytest.mark.parametrize("kind, write_official", [("vocos", save_vocos), ("bigvgan", save_bigvgan)])
def test_the_official_folder_loads_with_the_config_beside_the_weights(kind, write_official, tmp_path):
    vocoder = load_vocoder(kind, config="tiny", seed=5)
    write_official(vocoder, tmp_path)
    loaded = load_vocoder(kind, weights=str(tmp_path))  # the folder: its own config file
    mel = torch.randn(80, 9) - 5
    assert loaded.mel_config == vocoder.mel_config and loaded.name == tmp_path.name
    assert torch.equal(loaded(mel, STUDY), vocoder(mel, STUDY))


def test_a_vocoder_file_of_one_kind_is_refused_as_another_before_unpickling(tmp_path):
    path = save_bigvgan(load_vocoder("bigvgan", config="tiny", seed=0), tmp_path)
    with pytest.raises(VocoderError, match="holds a BigVGAN generator, not a jik876 HiFi-GAN"):
        load_vocoder("hifigan", weights=str(path), config="tiny")


def test_a_vocos_config_naming_other_classes_is_refused(tmp_path):
    """Vocos.from_hparams imports and calls whatever class a config names: only its own are allowed."""
    import yaml

    config = vocoder_class("vocos").read_config("tiny")
    config["head"] = {"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(VocoderError, match="head is 'subprocess.Popen'"):
        vocoder_class("vocos")(vocoder_class("vocos").read_config(str(path)), where=str(path))


def test_every_kind_has_a_family_and_reads_its_configs_with_the_shared_helper(tmp_path):
    assert {kind: VOCODERS[kind].family for kind in VOCODERS} == {
        "hifigan": "hifigan", "nemo-hifigan": "hifigan", "dle-hifigan": "hifigan", "vocos": "vocos", "bigvgan": "bigvgan"}
    for kind in VOCODERS:
        cls = VOCODERS[kind]
        assert all(isinstance(cls.read_config(name), dict) for name in cls.shipped_configs)
        with pytest.raises(VocoderError, match=f"nowhere.cfg: cannot read the {kind} config"):
            cls.read_config(str(tmp_path / "nowhere.cfg"))
        (tmp_path / "bad.cfg").write_text("{[: not a config")
        with pytest.raises(VocoderError, match=f"bad.cfg: not a {kind} config"):
            cls.read_config(str(tmp_path / "bad.cfg"))


def test_bigvgan_config_json_gives_its_mel_convention(tmp_path):
    config = vocoder_class("bigvgan").read_config("tiny")
    assert load_vocoder("bigvgan", config="tiny", seed=0).mel_config == STUDY  # 8 kHz bands: no re-analysis
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "fmax": None}))  # bigvgan_v2_22khz_80band_256x: bands up to Nyquist
    nyquist = load_vocoder("bigvgan", config=str(path), seed=0)
    assert nyquist.mel_config.f_max == 11025.0
    with pytest.raises(VocoderError, match="differ beyond framing"):
        nyquist(torch.randn(80, 5) - 5, STUDY)


def test_the_vocos_convention_is_the_official_feature_extractor(speech):
    """Our MelConfig of Vocos (HTK filterbank, centred reflect-padded frames, log(max(mel, 1e-7)))
    computes what vocos.feature_extractors.MelSpectrogramFeatures (torchaudio) computes."""
    from vocos.feature_extractors import MelSpectrogramFeatures

    vocos = load_vocoder("vocos", config="tiny", seed=0)
    audio = torch.from_numpy(soxr.resample(speech, 22050, 24000).astype(np.float32))
    theirs = MelSpectrogramFeatures()(audio[None])[0]
    ours = mel_spectrogram(audio, vocos.mel_config)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4)


def _reanalysis_error(signal: np.ndarray, dynamic_range_db: float) -> float:
    """Mean |log difference| between the 22.05 kHz mel re-analysed into Vocos's convention and Vocos's
    mel of the same signal resampled to 24 kHz, over the bands below the source's 8 kHz and the
    time-frequency bins within `dynamic_range_db` of the loudest."""
    vocos = MelConfig(sample_rate=24000, n_mels=100, f_max=12000.0, framing="centered-reflect",
                      log_floor=1e-7, filterbank="htk")
    source = mel_spectrogram(torch.from_numpy(signal), STUDY)
    converted = reanalyse_mel(source, STUDY, vocos)
    direct = mel_spectrogram(torch.from_numpy(soxr.resample(signal, 22050, 24000).astype(np.float32)), vocos)
    frames = min(converted.shape[-1], direct.shape[-1])
    assert abs(converted.shape[-1] - direct.shape[-1]) <= 1
    assert converted.shape[-1] == reanalysed_frames(source.shape[-1], STUDY, vocos)
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 12000 / 700), 102)[1:-1] / 2595) - 1)
    inside = torch.from_numpy(centres < 7800)
    converted, direct = converted[inside, :frames], direct[inside, :frames]
    loud = direct > direct.max() - dynamic_range_db / 20 * np.log(10)
    return float((converted - direct).abs()[loud].mean())


def test_reanalysing_a_study_mel_into_the_vocos_convention(speech):
    """Measured: speech 0.109 nats (30 dB) / 0.168 (60 dB); three sines 0.271 (30 dB)."""
    assert _reanalysis_error(speech, 30) < 0.15
    assert _reanalysis_error(speech, 60) < 0.22
    t = np.arange(22050) / 22050
    sines = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1870 * t)
             + 0.1 * np.sin(2 * np.pi * 5300 * t)).astype(np.float32)
    assert _reanalysis_error(sines, 30) < 0.35


def test_vocos_vocodes_a_study_mel_at_its_rate_and_refuses_other_rates():
    vocos = load_vocoder("vocos", config="tiny", seed=0)
    mel = torch.randn(80, 30) - 5
    wave = vocos(mel, STUDY)  # re-analysed to 32 frames at 24 kHz, resampled back to 22.05 kHz
    assert wave.shape == (30 * 256,) and torch.isfinite(wave).all() and wave.abs().max() <= 1
    assert [w.shape[0] for w in vocos.batch([mel, mel[:, :11]], STUDY)] == [30 * 256, 11 * 256]
    with pytest.raises(VocoderError, match="16000 Hz"):
        vocos(mel, MelConfig(sample_rate=16000))


@pytest.mark.parametrize("kind", ["vocos", "bigvgan"])
def test_a_mel_architecture_synthesises_clips_through_each_new_family(kind, tmp_path):
    """The synthesis path a recipe takes (make_clips: batched mels -> vocoder.batch -> 22.05 kHz WAVs)."""
    pytest.importorskip("matcha", reason="the Matcha-TTS stack is installed by tools/setup.sh")
    import soundfile as sf

    from sourcetrace.generators import build_generator
    from sourcetrace.generators.synthesis import make_clips

    generator = build_generator("matcha", "tiny", seed=0)
    vocoder = load_vocoder(kind, config="tiny", seed=0)
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    make_clips(generator, vocoder, ["A short one.", "And a somewhat longer second prompt."], 0, paths)
    for path in paths:
        audio, rate = sf.read(path)
        assert rate == 22050 and len(audio) % 256 == 0 and len(audio) > 0 and np.isfinite(audio).all()
