"""HiFi-GAN (the jik876 generator, as bundled by grad-tts and matcha-tts) behind one small class.

The study's Grad-TTS and Matcha-TTS vocoders are jik876 generators: `hifigan.pt` (weights under
'generator') and `generator_v1` (same layout). Both load with torch.load(weights_only=True).
The mel convention is the one in `sourcetrace.generators.mel` (22.05 kHz, hop 256, 80 mels).
"""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

import torch

SHIPPED_CONFIGS = ("v1", "tiny")


class VocoderError(ValueError):
    pass


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
    if name_or_path in SHIPPED_CONFIGS:
        text = resources.files(__package__).joinpath("configs", f"hifigan-{name_or_path}.json").read_text()
    else:
        text = Path(name_or_path).read_text(encoding="utf-8")
    return json.loads(text)


class HiFiGAN:
    def __init__(self, config: dict, state_dict: dict | None = None, seed: int = 0, name: str = "hifigan"):
        """A generator of `config`: with `state_dict`'s weights, or random ones drawn from `seed`."""
        self.config, self.name, self.sample_rate = config, name, int(config["sampling_rate"])
        torch.manual_seed(seed)
        self.generator = _build_generator(config)
        if state_dict is not None:
            self.generator.load_state_dict(state_dict)
        self.generator.eval()

    @classmethod
    def from_official(cls, weights: str | Path, config: str = "v1", name: str | None = None) -> "HiFiGAN":
        """A jik876-format generator file (a dict whose 'generator' entry is the state dict)."""
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)["generator"]
            return cls(load_hifigan_config(config), state, name=name or Path(weights).name)
        except (VocoderError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
            raise VocoderError(f"{weights}: not a jik876 HiFi-GAN generator file ({type(exc).__name__}: {exc})") from None

    @torch.no_grad()
    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) log mel -> (samples,) waveform in [-1, 1]."""
        return self.generator(mel.unsqueeze(0)).squeeze().clamp(-1.0, 1.0)
