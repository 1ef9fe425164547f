"""Vocoders behind one interface, their mel conventions, and conversion between conventions."""

import numpy as np
import pytest
import torch

pytest.importorskip("nemo", reason="the NeMo stack is installed by tools/setup.sh")

from sourcetrace.core.audio import load_audio
from sourcetrace.core.espeak import speak
from sourcetrace.core.mel import MelConfig, convert_mel, mel_spectrogram
from sourcetrace.generators import build_generator
from sourcetrace.vocoders import VocoderError, load_vocoder

pytestmark = pytest.mark.tts

JIK876 = MelConfig()
NEMO_FASTPITCH = MelConfig(framing="centered", log_guard="add")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "a.wav"
    speak("The quick brown fox jumps over the lazy dog.", path)
    return torch.from_numpy(load_audio(path, 22050))


def test_centered_convention_is_nemo_fastpitch_preprocessor(speech):
    """Our 'centered' + 'add' mel equals what NeMo's FastPitch computes from the same audio."""
    fastpitch = build_generator("fastpitch", "tiny", seed=0)
    ours = mel_spectrogram(speech, fastpitch.mel_config)
    fastpitch.model.eval()
    theirs, length = fastpitch.model.preprocessor(input_signal=speech[None], length=torch.tensor([len(speech)]))
    assert ours.shape[-1] == theirs.shape[-1] == len(speech) // 256 + 1  # NeMo counts one frame fewer as valid
    valid = int(length[0])
    np.testing.assert_allclose(ours[:, :valid].numpy(), theirs[0, :, :valid].numpy(), atol=2e-4)


def test_jik876_convention_is_nemo_hifigans_except_the_padded_edges(speech):
    """NeMo's HiFi-GAN frames (exact_pad, clamp) have the same centres as jik876's; they differ only
    where jik876 reflects and NeMo pads zeros, i.e. in the first and last frames."""
    vocoder = load_vocoder("nemo-hifigan", config="tiny", seed=0)
    assert vocoder.mel_config == JIK876
    ours = mel_spectrogram(speech, JIK876)
    theirs, _ = vocoder.model.audio_to_melspec_precessor(speech[None], torch.tensor([len(speech)]))
    assert abs(theirs.shape[-1] - ours.shape[-1]) <= 1
    inner = slice(4, ours.shape[-1] - 4)
    difference = (ours[:, inner] - theirs[0, :, inner]).abs()  # periodic vs symmetric Hann window
    assert difference.max() < 0.1 and difference.mean() < 0.01


def test_mel_conversion_round_trip(speech):
    mel = mel_spectrogram(speech, JIK876)
    there = convert_mel(mel, JIK876, NEMO_FASTPITCH)
    back = convert_mel(there, NEMO_FASTPITCH, JIK876)
    above = mel > np.log(2e-5)  # away from the floor, where both guards are invertible
    assert above.float().mean() > 0.5
    np.testing.assert_allclose(back[above].numpy(), mel[above].numpy(), atol=1e-4)
    assert torch.all(back >= np.log(1e-5) - 1e-6)  # floored values stay at the floor
    # Converting is what computing in the other convention gives (same frames: only the guard
    # differs), wherever the source kept the value (a clamped one is lost below the floor).
    direct = mel_spectrogram(speech, MelConfig(log_guard="add"))
    np.testing.assert_allclose(there[above].numpy(), direct[above].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="differ beyond framing"):
        convert_mel(mel, JIK876, MelConfig(f_max=11025.0))


@pytest.mark.parametrize("kind", ["hifigan", "nemo-hifigan"])  # vocos, bigvgan: test_vocoder_families.py
def test_every_hifigan_kind_round_trips_its_official_format(kind, tmp_path):
    vocoder = load_vocoder(kind, config="tiny", seed=3)
    if kind == "hifigan":
        path = tmp_path / "generator_v1"
        torch.save({"generator": vocoder.generator.state_dict()}, path)
    else:
        path = tmp_path / "tts_hifigan.nemo"
        vocoder.model.save_to(str(path))
    loaded = load_vocoder(kind, weights=str(path), config="tiny")
    mel = torch.randn(80, 20) - 5
    wave = vocoder(mel)
    assert wave.shape == (20 * 256,) and torch.equal(wave, loaded(mel))
    assert loaded.name == path.name and len(loaded.identity) == 64 and loaded.identity != vocoder.identity
    (tmp_path / "junk").write_bytes(b"not a vocoder")
    with pytest.raises(VocoderError, match="not a"):
        load_vocoder(kind, weights=str(tmp_path / "junk"), config="tiny")


def test_a_vocoder_converts_a_foreign_convention_and_refuses_an_incompatible_one():
    vocoder = load_vocoder("hifigan", config="tiny", seed=0)
    mel = torch.randn(80, 12) - 4
    assert torch.equal(vocoder(mel, NEMO_FASTPITCH), vocoder(convert_mel(mel, NEMO_FASTPITCH, JIK876)))
    with pytest.raises(VocoderError, match="16000 Hz"):
        vocoder(mel, MelConfig(sample_rate=16000, f_max=8000.0))
    with pytest.raises(VocoderError, match="unknown vocoder kind"):
        load_vocoder("wavenet", seed=0)
    with pytest.raises(VocoderError, match="a seed"):
        load_vocoder("hifigan")


def test_a_vocoder_kind_implements_generate_or_generate_batch():
    """Each defaults to the other (a batch of one; one at a time); a kind with neither is told so."""
    from sourcetrace.vocoders.base import Vocoder

    class Neither(Vocoder):
        kind = "neither"
        module = torch.nn.Identity()
        from_official = random = None

    class OneAtATime(Neither):
        def generate(self, mel):
            return mel.sum(0)

    mels = torch.ones(2, 80, 5)
    assert torch.equal(OneAtATime("one", MelConfig(), "x").generate_batch(mels), torch.full((2, 5), 80.0))
    for call in (lambda v: v.generate(mels[0]), lambda v: v.generate_batch(mels)):
        with pytest.raises(NotImplementedError, match="Neither implements neither generate nor generate_batch"):
            call(Neither("neither", MelConfig(), "x"))
