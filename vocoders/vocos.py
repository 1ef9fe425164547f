"""Vocos (charactr's `vocos` package): a ConvNeXt backbone predicting STFT frames, inverted by an ISTFT.

Official format: the Hugging Face folder of charactr/vocos-mel-24khz, `config.yaml` (the classes and
their arguments) + `pytorch_model.bin` (the `Vocos` module's state dict, torch.save). It is built
with the package's own `Vocos.from_hparams` and loaded weights-only; `Vocos.from_pretrained` is never
called (it downloads, and unpickles in full). from_hparams imports whatever class a config names, so a
config is accepted only when it names the package's own mel feature extractor, backbone and heads.

Its mel convention (torchaudio's MelSpectrogram defaults, power 1): 24 kHz, n_fft 1024, hop 256,
100 HTK-scale unnormalised bands up to 12 kHz, centred reflect-padded frames, log(max(mel, 1e-7)).
The study's mel architectures make 22.05 kHz mels of 80 Slaney bands up to 8 kHz, so such a mel is
re-analysed (`sourcetrace.core.mel.reanalyse_mel`: pseudo-inverse of the source filterbank, frames
interpolated at the 24 kHz frame centres, Vocos's filterbank) and the 24 kHz waveform resampled back
to 22.05 kHz (soxr): frames x 256 samples at the mel's rate, like every vocoder. Vocos then gets no
content above 8 kHz, which 22.05 kHz audio keeps up to 11.025 kHz.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import yaml

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, official_files, random_identity

SHIPPED_CONFIGS = ("mel-24khz", "tiny")
CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "pytorch_model.bin"
#: the classes a config may name: from_hparams imports and calls whatever it is given
ALLOWED_CLASSES = {
    "feature_extractor": {"vocos.feature_extractors.MelSpectrogramFeatures"},
    "backbone": {"vocos.models.VocosBackbone"},
    "head": {"vocos.heads.ISTFTHead", "vocos.heads.IMDCTSymExpHead", "vocos.heads.IMDCTCosHead"},
}


def _checked(config: dict, where: str) -> dict:
    """`config` when each part names an allowed class; a VocoderError naming `where` otherwise."""
    for part, allowed in ALLOWED_CLASSES.items():
        entry = config.get(part)
        class_path = entry.get("class_path") if isinstance(entry, dict) else None
        if class_path not in allowed:
            raise VocoderError(f"{where}: {part} is {class_path!r}; a mel Vocos config names one of "
                               f"{', '.join(sorted(allowed))} (a config's classes are imported and called)")
        if not isinstance(entry.get("init_args", {}), dict):
            raise VocoderError(f"{where}: {part}.init_args is not a mapping")
    return config


def mel_convention(config: dict) -> MelConfig:
    """vocos.feature_extractors.MelSpectrogramFeatures: torchaudio's MelSpectrogram(power=1), safe_log."""
    args = {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center",
            **config["feature_extractor"].get("init_args", {})}
    rate = int(args["sample_rate"])
    # "same" reflect-pads (n_fft - hop) / 2 and does not centre: jik876's framing, same periodic window
    framing = {"center": "centered-reflect", "same": "jik876"}.get(args["padding"])
    if framing is None:
        raise VocoderError(f"Vocos feature extractor padding {args['padding']!r}: expected 'center' or 'same'")
    return MelConfig(sample_rate=rate, n_fft=int(args["n_fft"]), hop_length=int(args["hop_length"]),
                     win_length=int(args["n_fft"]), n_mels=int(args["n_mels"]), f_min=0.0, f_max=float(rate // 2),
                     framing=framing, log_guard="clamp", log_floor=1e-7, filterbank="htk")


class Vocos(Vocoder):
    """charactr's Vocos built by `vocos.Vocos.from_hparams` from its config.yaml."""

    kind = "vocos"
    family = "vocos"
    official_formats = (OfficialFormat("torch", "a Vocos vocoder", key_prefixes=(("backbone.convnext.",), ("head.",))),)
    shipped_configs = SHIPPED_CONFIGS
    config_format = "yaml"
    reanalysed_rates = (22050,)  # the study's mel architectures

    def __init__(self, config: dict, state_dict: dict | None = None, seed: int = 0, name: str = "vocos",
                 identity: str = "", where: str = "Vocos config"):
        """A Vocos of `config`: with `state_dict`'s weights, or random ones drawn from `seed`."""
        from vocos import Vocos as VocosModel

        _checked(config, where)
        super().__init__(name, mel_convention(config), identity or random_identity(self.kind, repr(config), seed))
        self.config = config
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / CONFIG_FILE
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            self.model = VocosModel.from_hparams(str(path))
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        self.model.eval()
        # a centred ISTFT gives (frames - 1) x hop samples: one more frame makes it frames x hop
        self._extra_frame = config["head"].get("init_args", {}).get("padding", "same") == "center"

    @classmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> Vocos:
        """The official folder (config.yaml + pytorch_model.bin), or its pytorch_model.bin with
        `config` (a shipped name or a config.yaml; default: the config.yaml beside it)."""
        weights, config_source = official_files(path, WEIGHTS_FILE, CONFIG_FILE, config)
        state_dict = load_torch_file(weights, cls.kind, error=VocoderError)
        vocos_config = cls.read_config(config_source, sections=tuple(ALLOWED_CLASSES))
        try:
            return cls(vocos_config, state_dict, name=name or Path(path).name, identity=file_identity(weights),
                       where=config_source)
        except VocoderError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dict of other keys or shapes
            raise VocoderError(f"{weights}: not a Vocos state dict for config {config_source!r} "
                               f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> Vocos:
        return cls(cls.read_config(config, sections=tuple(ALLOWED_CLASSES)), seed=seed,
                   name=name or f"vocos-{config}-random-s{seed}", where=config)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        mels = mels.to(next(self.model.parameters()).device)
        if self._extra_frame:
            mels = torch.cat([mels, mels[..., -1:]], dim=-1)
        return self.model.decode(mels).cpu()
