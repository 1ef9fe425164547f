"""HiFi-GAN (the jik876 generator, as bundled by grad-tts and matcha-tts) behind one small class.

The study's Grad-TTS and Matcha-TTS vocoders are jik876 generators: `hifigan.pt` (weights under
'generator') and `generator_v1` (same layout). Both load with torch.load(weights_only=True).
Its mel convention comes from its config.json (jik876's: reflect padding, log(max(mel, 1e-5))).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, random_identity

SHIPPED_CONFIGS = ("v1", "tiny")


def _build_generator(config: dict) -> torch.nn.Module:
    """The jik876 generator class from matcha-tts (takes the config) or grad-tts (takes a config file)."""
    try:
        from matcha.hifigan.env import AttrDict
        from matcha.hifigan.models import Generator

        return Generator(AttrDict(config))
    except ImportError:
        pass
    try:
        from grad_tts.model.hifi_gan.models import Generator
    except ImportError:
        raise VocoderError("HiFi-GAN needs matcha-tts or grad-tts installed; run tools/setup.sh") from None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        return Generator(str(path))


def load_hifigan_config(name_or_path: str) -> dict:
    """A shipped config (`v1`: jik876 V1, the study's; `tiny`: for tests) or a config.json path."""
    return HiFiGAN.read_config(name_or_path)


class HiFiGAN(Vocoder):
    """The jik876 generator (Grad-TTS's hifigan.pt, Matcha-TTS's generator_v1)."""

    kind = "hifigan"
    family = "hifigan"
    official_formats = (OfficialFormat("torch", "a jik876 HiFi-GAN generator", keys=("generator",),
                                       key_prefixes=(("conv_pre.",), ("ups.",))),)
    shipped_configs = SHIPPED_CONFIGS
    config_format = "json"

    def __init__(self, config: dict, state_dict: dict | None = None, seed: int = 0, name: str = "hifigan",
                 identity: str = ""):
        """A generator of `config`: with `state_dict`'s weights, or random ones drawn from `seed`."""
        super().__init__(name, mel_convention(config), identity or random_identity(self.kind, repr(config), seed))
        self.config = config
        torch.manual_seed(seed)
        self.generator = _build_generator(config)
        if state_dict is not None:
            self.generator.load_state_dict(state_dict)
        self.generator.eval()

    @classmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> HiFiGAN:
        """A jik876-format generator file (a dict whose 'generator' entry is the state dict)."""
        checkpoint = load_torch_file(path, cls.kind, error=VocoderError)
        hifigan_config = load_hifigan_config(config or "v1")
        try:
            return cls(hifigan_config, checkpoint["generator"], name=name or Path(path).name,
                       identity=file_identity(path))
        except Exception as exc:  # noqa: BLE001 - a dict of other keys or shapes
            raise VocoderError(f"{path}: not a jik876 HiFi-GAN generator file for config {config or 'v1'!r} "
                               f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> HiFiGAN:
        return cls(load_hifigan_config(config), seed=seed, name=name or f"hifigan-{config}-random-s{seed}")

    @property
    def module(self) -> torch.nn.Module:
        return self.generator

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        return self.generator(mels.to(next(self.generator.parameters()).device))[:, 0].cpu()


def mel_convention(config: dict) -> MelConfig:
    """jik876's meldataset.py: reflect-padded frames, log(max(mel, 1e-5))."""
    return MelConfig(sample_rate=int(config["sampling_rate"]), n_fft=int(config["n_fft"]),
                     hop_length=int(config["hop_size"]), win_length=int(config["win_size"]),
                     n_mels=int(config["num_mels"]), f_min=float(config["fmin"]), f_max=float(config["fmax"]),
                     framing="jik876", log_guard="clamp", log_floor=1e-5)
