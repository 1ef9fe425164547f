"""The vocoder interface: a log-mel spectrogram in the vocoder's own convention -> a waveform.

Every vocoder states its mel convention (`MelConfig`: rate, STFT, filterbank, log guard). Called
with the convention of the mel it is given, it converts first (`convert_mel`), so a FastPitch mel
(NeMo's log(mel + 1e-5)) can drive a jik876 HiFi-GAN (log(max(mel, 1e-5))) and back. A kind
that lists a foreign rate in `reanalysed_rates` (Vocos: 24 kHz, 100 HTK bands) re-analyses such a
mel into its own convention (`reanalyse_mel`) and resamples its waveform back to the mel's rate.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import soxr
import torch
import yaml

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.core.mel import MelConfig, convert_mel, reanalyse_mel, same_filterbank


class VocoderError(SourcetraceError, ValueError):
    pass


CONFIG_PARSERS = {"json": json.loads, "toml": tomllib.loads, "yaml": yaml.safe_load}


class Vocoder(ABC):
    kind: ClassVar[str]
    #: the vocoder family a benchmark groups clips by: kinds that share an architecture share it
    #: (jik876's and NeMo's HiFi-GAN are both "hifigan")
    family: ClassVar[str]
    #: config names shipped as configs/<kind>-<name>.<config_format> beside the class's module;
    #: any other config is a path
    shipped_configs: ClassVar[tuple[str, ...]] = ()
    config_format: ClassVar[str] = "json"  # or "toml", "yaml"
    #: sample rates of foreign mels re-analysed into this vocoder's convention (any other is refused)
    reanalysed_rates: ClassVar[tuple[int, ...]] = ()
    #: the official file formats `from_official` reads (what checkpoints/official.py recognises
    #: files by and applies the trust rule with)
    official_formats: ClassVar[tuple[OfficialFormat, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "family") and hasattr(cls, "kind"):
            cls.family = cls.kind  # a kind that names no family is one of its own (plug-ins)

    def __init__(self, name: str, mel_config: MelConfig, identity: str):
        self.name = name              # what the manifest's `vocoder` column records
        self.mel_config = mel_config  # the convention of the mels it was trained on
        self.identity = identity      # sha256 of the weights file, or of (config, seed) for random ones

    @property
    def sample_rate(self) -> int:
        """The rate of its own convention; a re-analysed mel's waveform comes at the mel's rate."""
        return self.mel_config.sample_rate

    @classmethod
    def read_config(cls, name_or_path: str, sections: tuple[str, ...] = ()) -> dict:
        """A shipped config by name, or a config file by path, parsed as `config_format`; each of
        `sections` must be in it. Every problem raises VocoderError naming the file."""
        if name_or_path in cls.shipped_configs:
            package = cls.__module__.rpartition(".")[0]
            file = f"{cls.kind}-{name_or_path}.{cls.config_format}"
            text = resources.files(package).joinpath("configs", file).read_text(encoding="utf-8")
        else:
            try:
                text = Path(name_or_path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise VocoderError(f"{name_or_path}: cannot read the {cls.kind} config ({getattr(exc, 'strerror', None) or exc}); "
                                   f"give a {cls.config_format} file or one of {', '.join(cls.shipped_configs)}") from None
        try:
            config = CONFIG_PARSERS[cls.config_format](text)
        except Exception as exc:  # noqa: BLE001 - each parser raises its own error type
            raise VocoderError(f"{name_or_path}: not a {cls.kind} config {cls.config_format} ({exc})") from None
        if not isinstance(config, dict):
            raise VocoderError(f"{name_or_path}: not a {cls.kind} config {cls.config_format} (no mapping at the top)")
        for section in sections:
            if section not in config:
                raise VocoderError(f"{cls.kind} config {name_or_path!r}: missing {section!r}")
        return config

    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The torch module that holds the weights."""

    def to(self, device: str | torch.device) -> Vocoder:
        self.module.to(device)
        return self

    @classmethod
    @abstractmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> Vocoder:
        """The official weights file in its native format (never fully unpickled)."""

    @classmethod
    @abstractmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> Vocoder:
        """An untrained vocoder of a named config with weights drawn from `seed` (tests, miniature study)."""

    def generate(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) log mel in this vocoder's convention -> (samples,) waveform in [-1, 1].
        A kind implements this or `generate_batch` (or both); each defaults to the other."""
        if type(self).generate_batch is Vocoder.generate_batch:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor generate_batch")
        return self.generate_batch(mel.unsqueeze(0))[0]

    @torch.no_grad()
    def __call__(self, mel: torch.Tensor, convention: MelConfig | None = None) -> torch.Tensor:
        """Vocode a mel of `convention` (default: this vocoder's own): frames x hop samples at its rate."""
        return self._at_rate_of(self.generate(self._own(mel, convention)), mel.shape[-1], convention).clamp(-1.0, 1.0)

    @torch.no_grad()
    def batch(self, mels: list[torch.Tensor], convention: MelConfig | None = None) -> list[torch.Tensor]:
        """Vocode several mels in one pass: padded with the log floor (silence), each waveform cut
        to its own frames x hop. The padding reaches a clip's last few frames through the
        generator's receptive field, so a clip may differ slightly from its unbatched twin."""
        own = [self._own(mel, convention) for mel in mels]
        frames = max(m.shape[-1] for m in own)
        floor = float(torch.log(torch.tensor(self.mel_config.log_floor)))
        padded = torch.full((len(own), own[0].shape[0], frames), floor)
        for i, mel in enumerate(own):
            padded[i, :, : mel.shape[-1]] = mel
        waves = self.generate_batch(padded)
        hop = self.mel_config.hop_length
        return [self._at_rate_of(waves[i, : mel.shape[-1] * hop], given.shape[-1], convention).clamp(-1.0, 1.0)
                for i, (given, mel) in enumerate(zip(mels, own))]

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, samples); the default vocodes one at a time."""
        if type(self).generate is Vocoder.generate:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor generate_batch")
        return torch.stack([self.generate(mel) for mel in mels])

    def _own(self, mel: torch.Tensor, convention: MelConfig | None) -> torch.Tensor:
        if convention is not None:
            if convention.sample_rate in self.reanalysed_rates and not same_filterbank(convention, self.mel_config):
                return reanalyse_mel(mel, convention, self.mel_config)
            if convention.sample_rate != self.sample_rate:
                raise VocoderError(f"{self.name}: makes {self.sample_rate} Hz audio, the mel is of {convention.sample_rate} Hz")
            try:
                mel = convert_mel(mel, convention, self.mel_config)
            except ValueError as exc:
                raise VocoderError(f"{self.name}: {exc}") from None
        return mel

    def _at_rate_of(self, wave: torch.Tensor, frames: int, convention: MelConfig | None) -> torch.Tensor:
        """The waveform of a re-analysed mel resampled to the mel's rate and cut (or zero-padded by
        the resampler's rounding) to its `frames` x hop samples; any other waveform as it is."""
        if convention is None or convention.sample_rate == self.sample_rate:
            return wave
        resampled = soxr.resample(wave.numpy().astype(np.float32), self.sample_rate, convention.sample_rate, quality="HQ")
        samples = frames * convention.hop_length
        fitted = np.zeros(samples, dtype=np.float32)
        fitted[: min(samples, len(resampled))] = resampled[:samples]
        return torch.from_numpy(fitted)


def official_files(path: str | Path, weights_name: str, config_name: str, config: str | None) -> tuple[Path, str]:
    """(weights file, config source) of an official vocoder folder, or of its weights file: the
    config is `config` (a shipped name or a file), else the `config_name` file beside the weights."""
    path = Path(path)
    weights = path / weights_name if path.is_dir() else path
    return weights, config or str(weights.parent / config_name)


def file_identity(path: str | Path) -> str:
    return sha256_file(Path(path))


def random_identity(kind: str, config: str, seed: int) -> str:
    return hashlib.sha256(f"{kind}:{config}:random:{seed}".encode()).hexdigest()
