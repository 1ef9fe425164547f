"""NVIDIA NeMo's HiFi-GAN (`HifiGanModel`, tts_hifigan.nemo), NeMo's own FastPitch vocoder; the
study's FastPitch used DeepLearningExamples' HiFi-GAN instead (dle_hifigan.py).

Its mel convention is its preprocessor's (NeMo's hifigan.yaml: frames padded by (n_fft - hop) / 2
without centring, log(max(mel, 1e-5))). The NeMo padding is zeros and the window symmetric where
jik876's are reflection and periodic: the frames have the same centres, so the convention is
recorded as "jik876" framing with a clamp guard.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import check_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.core.nemo_support import nemo_tts_models
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, random_identity

SHIPPED_CONFIGS = ("v1", "tiny")


def load_nemo_hifigan_config(name_or_path: str) -> dict:
    """A shipped config (`v1`: NeMo's hifigan.yaml with generator v1; `tiny`: for tests) or a TOML path."""
    return NemoHiFiGAN.read_config(name_or_path, sections=("generator", "mel"))


def _nemo_config(config: dict) -> dict:
    mel = MelConfig(**config["mel"])
    return {
        "train_ds": {"dataset": {"_target_": "nemo.collections.tts.data.dataset.VocoderDataset"}, "defer_setup": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures",
            "nfilt": mel.n_mels, "lowfreq": mel.f_min, "highfreq": mel.f_max, "n_fft": mel.n_fft,
            "n_window_size": mel.win_length, "n_window_stride": mel.hop_length, "pad_to": 0, "pad_value": -11.52,
            "sample_rate": mel.sample_rate, "window": "hann", "normalize": None, "preemph": None, "dither": 0.0,
            "frame_splicing": 1, "log": True, "log_zero_guard_type": mel.log_guard,
            "log_zero_guard_value": mel.log_floor, "mag_power": 1.0, "use_grads": False, "exact_pad": True,
        },
        "generator": {"_target_": "nemo.collections.tts.modules.hifigan_modules.Generator", **config["generator"]},
        "optim": {"_target_": "torch.optim.AdamW", "lr": 2e-4, "betas": [0.8, 0.99]},
        "max_steps": 2500000, "l1_loss_factor": 45,
    }


def _convention(preprocessor) -> MelConfig:
    """The mel convention of a NeMo HiFi-GAN's preprocessor config."""
    return MelConfig(sample_rate=int(preprocessor["sample_rate"]), n_fft=int(preprocessor["n_fft"]),
                     hop_length=int(preprocessor["n_window_stride"]), win_length=int(preprocessor["n_window_size"]),
                     n_mels=int(preprocessor["nfilt"]), f_min=float(preprocessor["lowfreq"]),
                     f_max=float(preprocessor["highfreq"]),
                     framing="jik876" if preprocessor.get("exact_pad") else "centered",
                     log_guard=str(preprocessor["log_zero_guard_type"]),
                     log_floor=float(preprocessor["log_zero_guard_value"]))


class NemoHiFiGAN(Vocoder):
    kind = "nemo-hifigan"
    family = "hifigan"
    official_formats = (OfficialFormat("nemo", "a NeMo HiFi-GAN vocoder", nemo_target="HifiGanModel"),)
    shipped_configs = SHIPPED_CONFIGS
    config_format = "toml"

    def __init__(self, model, name: str, identity: str):
        super().__init__(name, _convention(model.cfg.preprocessor), identity)
        self.model = model.eval()

    @classmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> NemoHiFiGAN:
        """A `.nemo` archive: NeMo restores it weights-only, with its allow-listed instantiation."""
        check_file(path, cls.kind, error=VocoderError)  # complete, and a NeMo HiFi-GAN
        HifiGanModel = nemo_tts_models().HifiGanModel
        try:
            model = HifiGanModel.restore_from(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - NeMo raises many types for a bad archive
            raise VocoderError(f"{path}: not a NeMo HiFi-GAN .nemo archive ({type(exc).__name__}: {exc})") from None
        return cls(model, name or Path(path).name, file_identity(path))

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> NemoHiFiGAN:
        from omegaconf import OmegaConf

        HifiGanModel = nemo_tts_models().HifiGanModel
        torch.manual_seed(seed)
        model = HifiGanModel(cfg=OmegaConf.create(_nemo_config(load_nemo_hifigan_config(config))))
        return cls(model, name or f"nemo-hifigan-{config}-random-s{seed}", random_identity(cls.kind, config, seed))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        return self.model.convert_spectrogram_to_audio(spec=mels.to(self.model.device)).cpu()
