"""NVIDIA's BigVGAN (the `bigvgan` package, v2): a HiFi-GAN generator with anti-aliased Snake activations.

Official format: a Hugging Face folder such as nvidia/bigvgan_v2_22khz_80band_fmax8k_256x,
`config.json` (the generator's hyper-parameters and mel settings) + `bigvgan_generator.pt`
({"generator": state dict}, what the package's `BigVGAN._save_pretrained` writes), loaded
weights-only; the package's `from_pretrained` is never called (it downloads, and unpickles in full).
The fused CUDA activation kernel is not used (use_cuda_kernel=False: it compiles with nvcc at load).

Its mel convention is jik876's (meldataset.py: reflect padding of (n_fft - hop) / 2, periodic Hann,
Slaney filterbank, log(max(mel, 1e-5))), with fmin/fmax from the config (fmax null: the Nyquist
frequency). The shipped `v2-22khz-80band-fmax8k-256x` is that model's generator (the v2 256x shape
shared by the 22, 24 and 44 kHz models, 112M parameters): its 80 bands up to 8 kHz are the study's
mels, so FastPitch, Grad-TTS and Matcha-TTS drive it without re-analysis. The fmax-less
`bigvgan_v2_22khz_80band_256x` (bands up to 11.025 kHz) loads from its own config.json, and a mel
of 8 kHz bands is refused by it (filterbanks differ).
"""

from __future__ import annotations

from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, official_files, random_identity

SHIPPED_CONFIGS = ("v2-22khz-80band-fmax8k-256x", "tiny")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "bigvgan_generator.pt"
MEL_KEYS = ("num_mels", "n_fft", "hop_size", "win_size", "sampling_rate", "fmin", "fmax")


def mel_convention(config: dict) -> MelConfig:
    """bigvgan.meldataset.mel_spectrogram: jik876's framing and log guard."""
    rate = int(config["sampling_rate"])
    return MelConfig(sample_rate=rate, n_fft=int(config["n_fft"]), hop_length=int(config["hop_size"]),
                     win_length=int(config["win_size"]), n_mels=int(config["num_mels"]), f_min=float(config["fmin"]),
                     f_max=float(rate / 2 if config["fmax"] is None else config["fmax"]),
                     framing="jik876", log_guard="clamp", log_floor=1e-5)


class BigVGAN(Vocoder):
    """bigvgan.BigVGAN of a config.json, weight norm removed for inference as the package's inference.py does."""

    kind = "bigvgan"
    family = "bigvgan"
    # a HiFi-GAN layout with Snake activations
    official_formats = (OfficialFormat("torch", "a BigVGAN generator", keys=("generator",),
                                       key_prefixes=(("activation_post.",),), outranks=("hifigan", "dle-hifigan")),)
    shipped_configs = SHIPPED_CONFIGS
    config_format = "json"

    def __init__(self, config: dict, state_dict: dict | None = None, seed: int = 0, name: str = "bigvgan",
                 identity: str = ""):
        """A generator of `config`: with `state_dict`'s weights, or random ones drawn from `seed`."""
        from bigvgan.bigvgan import BigVGAN as BigVGANModel
        from bigvgan.env import AttrDict

        super().__init__(name, mel_convention(config), identity or random_identity(self.kind, repr(config), seed))
        self.config = config
        torch.manual_seed(seed)
        self.generator = BigVGANModel(AttrDict(config), use_cuda_kernel=False)
        without_weight_norm = False
        if state_dict is not None:
            try:
                self.generator.load_state_dict(state_dict)
            except RuntimeError:  # saved without weight norm, as the package's from_pretrained allows
                self._remove_weight_norm()
                without_weight_norm = True
                self.generator.load_state_dict(state_dict)
        if not without_weight_norm:
            self._remove_weight_norm()
        self.generator.eval()

    def _remove_weight_norm(self) -> None:
        with redirect_stdout(StringIO()):  # the package prints a line each time
            self.generator.remove_weight_norm()

    @classmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> BigVGAN:
        """The official folder (config.json + bigvgan_generator.pt), or its bigvgan_generator.pt with
        `config` (a shipped name or a config.json; default: the config.json beside it)."""
        weights, config_source = official_files(path, WEIGHTS_FILE, CONFIG_FILE, config)
        checkpoint = load_torch_file(weights, cls.kind, error=VocoderError)
        bigvgan_config = cls.read_config(config_source, sections=MEL_KEYS)
        try:
            return cls(bigvgan_config, checkpoint["generator"], name=name or Path(path).name, identity=file_identity(weights))
        except Exception as exc:  # noqa: BLE001 - a dict of other keys or shapes
            raise VocoderError(f"{weights}: not a BigVGAN generator file for config {config_source!r} "
                               f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> BigVGAN:
        return cls(cls.read_config(config, sections=MEL_KEYS), seed=seed, name=name or f"bigvgan-{config}-random-s{seed}")

    @property
    def module(self) -> torch.nn.Module:
        return self.generator

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        return self.generator(mels.to(next(self.generator.parameters()).device))[:, 0].cpu()
