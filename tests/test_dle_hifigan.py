"""DeepLearningExamples' HiFi-GAN (`dle-hifigan`, FastPitch's vocoder in the study): its generator
files in each layout DLE's loader takes (random weights), mapped onto the jik876 generator; files
that are truncated, of another model or that would run code; its mel convention; the registry and
the study recipe that name it."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matcha", reason="the jik876 generator class comes with matcha-tts (tools/setup.sh)")

from sourcetrace.checkpoints.registry import load_registry, verify_folder
from sourcetrace.core.mel import MelConfig, convert_mel, mel_spectrogram
from sourcetrace.pipeline.recipe import load_recipe
from sourcetrace.testing import parametrize_with_checks, vocoder_checks
from sourcetrace.vocoders import VocoderError, load_vocoder, vocoder_class

pytestmark = pytest.mark.tts

OFFICIAL = "hifigan_gen_checkpoint_10000_ft.pt"
DLE_FASTPITCH = MelConfig(framing="centered-reflect")  # TacotronSTFT: centred, reflect padding, log(max(mel, 1e-5))
NEMO_FASTPITCH = MelConfig(framing="centered", log_guard="add")
ROOT = Path(__file__).resolve().parents[1]


def dle_state_dict(vocoder, layout: str) -> dict:
    """The generator's weights as a DLE generator holds them. "nested": DLE's public Generator
    (hifigan/models.py), whose resblocks are a Sequential per upsampling stage of a Sequential per
    kernel, built here from the same modules so that torch names the keys; "flat": checkpoints
    older than that (jik876's numbering), "channels-last": flat, from the Conv2d generator
    (models_ch_last_.py: every convolution weight with a trailing dimension of 1), saved from a
    DistributedDataParallel wrapper ('module.')."""
    generator = vocoder.generator
    if layout == "nested":
        kernels = len(vocoder.config["resblock_kernel_sizes"])
        blocks = list(generator.resblocks)
        dle = torch.nn.Module()
        dle.conv_pre, dle.conv_post = generator.conv_pre, generator.conv_post
        dle.ups = torch.nn.Sequential(*generator.ups)
        dle.resblocks = torch.nn.Sequential(*(torch.nn.Sequential(*blocks[i:i + kernels])
                                              for i in range(0, len(blocks), kernels)))
        return dle.state_dict()
    state = generator.state_dict()
    if layout == "channels-last":
        state = {f"module.{k}": v.unsqueeze(-1) if v.dim() == 3 else v for k, v in state.items()}
    return state


def save_dle(vocoder, folder: Path, layout: str = "nested", name: str = OFFICIAL) -> Path:
    """common/utils.py Checkpointer.maybe_save's generator file."""
    path = Path(folder) / name
    torch.save({"generator": dle_state_dict(vocoder, layout), "gen_ema": None, "config": dict(vocoder.config),
                "train_setup": {"sampling_rate": 22050, "filter_length": 1024, "hop_length": 256, "win_length": 1024,
                                "num_mels": 80, "mel_fmin": 0.0, "mel_fmax": 8000.0, "mel_fmax_loss": None,
                                "max_wav_value": 32768.0, "segment_size": 8192, "seed": 1234},
                "train_state": {"epoch": 10000, "iters_all": 1234, "fine_tune_epoch_start": 6501}}, path)
    return path


@parametrize_with_checks(vocoder_checks(vocoder_class("dle-hifigan"), write_official=save_dle))
def test_the_kind_conforms_and_reads_its_official_file(check, tmp_path):
    check(tmp_path)


@pytest.mark.parametrize("layout", ["nested", "flat", "channels-last"])
def test_each_layout_maps_onto_the_jik876_generator(layout, tmp_path):
    vocoder = load_vocoder("dle-hifigan", config="tiny", seed=5)
    keys = list(dle_state_dict(vocoder, layout))
    assert ("resblocks.2.1.convs2.2.weight_v" in keys) == (layout == "nested")  # jik876's resblocks.5 (3 stages x 2)
    loaded = load_vocoder("dle-hifigan", weights=str(save_dle(vocoder, tmp_path, layout)), config="tiny")
    mel = torch.randn(80, 16) - 5
    assert torch.equal(loaded(mel), vocoder(mel)) and loaded.name == OFFICIAL
    assert loaded.config == vocoder.config  # the generator is the one the file's own 'config' describes


def test_truncated_foreign_and_hostile_files_are_refused(tmp_path):
    vocoder = load_vocoder("dle-hifigan", config="tiny", seed=5)
    path = save_dle(vocoder, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VocoderError, match=f"{OFFICIAL}: truncated or damaged torch zip"):
        load_vocoder("dle-hifigan", weights=str(path))
    jik876 = tmp_path / "generator_v1"  # Matcha's vocoder: jik876's format, no 'config'
    torch.save({"generator": load_vocoder("hifigan", config="tiny", seed=1).generator.state_dict()}, jik876)
    with pytest.raises(VocoderError, match="holds a jik876 HiFi-GAN generator, not a DeepLearningExamples HiFi-GAN"):
        load_vocoder("dle-hifigan", weights=str(jik876), config="tiny")
    with pytest.raises(VocoderError, match="holds a DeepLearningExamples HiFi-GAN generator, not a jik876"):
        load_vocoder("hifigan", weights=str(save_dle(vocoder, tmp_path, name="dle.pt")), config="tiny")
    other = tmp_path / "other.pt"  # weights of one kernel per stage, a 'config' of two
    torch.save({"generator": load_vocoder("hifigan", config="tiny", seed=1).generator.state_dict(),
                "config": dict(vocoder.config)}, other)
    with pytest.raises(VocoderError, match="other.pt: not a DeepLearningExamples HiFi-GAN generator its own 'config'"):
        load_vocoder("dle-hifigan", weights=str(other))
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = tmp_path / "hostile.pt"
    torch.save({"generator": {}, "config": RunsCode()}, hostile)
    with pytest.raises(VocoderError, match="posix.system.*trust or not"):
        load_vocoder("dle-hifigan", weights=str(hostile))
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"generator": {}, "config": {}}))
    with pytest.raises(VocoderError, match="plain pickle"):
        load_vocoder("dle-hifigan", weights=str(tmp_path / "plain.pkl"))
    assert not marker.exists()


def test_its_convention_is_dle_fastpitchs_and_nemo_fastpitch_mels_are_converted():
    """librosa's centred reflect-padded STFT with a periodic Hann window and Slaney filters is what
    DLE's TacotronSTFT computes (common/stft.py, common/layers.py): our "centered-reflect" framing."""
    librosa = pytest.importorskip("librosa")
    vocoder = load_vocoder("dle-hifigan", config="ljs22khz-finetune", seed=0)
    assert vocoder.mel_config == DLE_FASTPITCH == MelConfig(**vocoder.read_config("tiny")["mel"])
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 22050) + 0.05 * rng.standard_normal(8000)).astype(np.float32)
    theirs = np.log(np.maximum(librosa.feature.melspectrogram(
        y=wave, sr=22050, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=True, pad_mode="reflect",
        power=1.0, n_mels=80, fmin=0.0, fmax=8000.0), 1e-5))
    np.testing.assert_allclose(mel_spectrogram(torch.from_numpy(wave), DLE_FASTPITCH).numpy(), theirs, atol=2e-4)
    tiny = load_vocoder("dle-hifigan", config="tiny", seed=0)
    mel = torch.randn(80, 12) - 4
    assert torch.equal(tiny(mel, NEMO_FASTPITCH), tiny(convert_mel(mel, NEMO_FASTPITCH, DLE_FASTPITCH)))


def test_registry_and_study_recipe_name_the_papers_vocoders(tmp_path):
    entries = {e.id: e for e in load_registry()}
    dle = entries["vocoder/hifigan-dle"]
    assert (dle.model, dle.architecture, dle.file) == ("dle-hifigan", "fastpitch", OFFICIAL)
    assert dle.url.startswith("https://api.ngc.nvidia.com/v2/models/nvidia/dle/hifigan__pyt_ckpt_mode-finetune_ds-ljs22khz/")
    assert dle.url.endswith(f"/files/{OFFICIAL}") and dle.paper_url.endswith("/hifigan__pyt_ckpt_mode-finetune_ds-ljs22khz")
    assert "15AeZO2Zo4NB17PG8oGgfQk0J1Ppja0gI" in entries["vocoder/hifigan-gradtts"].paper_url
    assert "18TnHbr4IlduAWdLrKcZrqbmfPOed1pS" in entries["vocoder/hifigan-matcha"].paper_url
    assert entries["vocoder/hifigan-matcha"].paper_note.startswith("differs")
    assert all(e.paper_note for e in entries.values() if e.paper_url)
    assert not entries["vocoder/hifigan-nemo"].paper_url  # NeMo's tts_hifigan: not the paper's, still a vocoder
    recipe = load_recipe(ROOT / "recipes" / "study.toml")
    fastpitch = recipe.vocoders[recipe.architectures["fastpitch"].vocoder]
    assert fastpitch.kind == "dle-hifigan" and fastpitch.weights.name == OFFICIAL
    # verify: the published layout is sound; cut or foreign, it is a problem line
    folder = tmp_path / "official"
    folder.mkdir()
    save_dle(load_vocoder("dle-hifigan", config="tiny", seed=2), folder)
    [row] = verify_folder(folder, [dle])
    assert row.status == "ok" and row.note is None  # weights-only: no trust line
    path = folder / OFFICIAL
    path.write_bytes(path.read_bytes()[:-200])
    [row] = verify_folder(folder, [dle])
    assert row.status == "bad" and "truncated" in row.problems[0]
    torch.save({"generator": load_vocoder("hifigan", config="tiny", seed=1).generator.state_dict()}, path)
    [row] = verify_folder(folder, [dle])
    assert row.problems == ["holds a jik876 HiFi-GAN generator, not a DeepLearningExamples HiFi-GAN generator"]
