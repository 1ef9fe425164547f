"""The vocoder interface: a log-mel spectrogram in the vocoder's own convention -> a waveform.

Every vocoder states its mel convention (`MelConfig`: rate, STFT, filterbank, log guard). Called
with the convention of the mel it is given, it converts first (`convert_mel`), so a FastPitch mel
(NeMo's log(mel + 1e-5)) can drive a jik876 HiFi-GAN (log(max(mel, 1e-5))) and back.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch

from sourcetrace.errors import SourcetraceError
from sourcetrace.mel import MelConfig, convert_mel


class VocoderError(SourcetraceError, ValueError):
    pass


class Vocoder(ABC):
    kind: ClassVar[str]
    #: config names shipped in vocoders/configs/; any other config is a path
    shipped_configs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, mel_config: MelConfig, identity: str):
        self.name = name              # what the manifest's `vocoder` column records
        self.mel_config = mel_config  # the convention of the mels it was trained on
        self.identity = identity      # sha256 of the weights file, or of (config, seed) for random ones

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The torch module that holds the weights."""

    def to(self, device: str | torch.device) -> "Vocoder":
        self.module.to(device)
        return self

    @classmethod
    @abstractmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> "Vocoder":
        """The official weights file in its native format (never fully unpickled)."""

    @classmethod
    @abstractmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> "Vocoder":
        """An untrained vocoder of a named config with weights drawn from `seed` (tests, miniature study)."""

    @abstractmethod
    def generate(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) log mel in this vocoder's convention -> (samples,) waveform in [-1, 1]."""

    @torch.no_grad()
    def __call__(self, mel: torch.Tensor, convention: MelConfig | None = None) -> torch.Tensor:
        """Vocode a mel of `convention` (default: this vocoder's own)."""
        return self.generate(self._own(mel, convention)).clamp(-1.0, 1.0)

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
        return [waves[i, : mel.shape[-1] * hop].clamp(-1.0, 1.0) for i, mel in enumerate(own)]

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, samples); the default vocodes one at a time."""
        return torch.stack([self.generate(mel) for mel in mels])

    def _own(self, mel: torch.Tensor, convention: MelConfig | None) -> torch.Tensor:
        if convention is not None:
            if convention.sample_rate != self.sample_rate:
                raise VocoderError(f"{self.name}: makes {self.sample_rate} Hz audio, the mel is of {convention.sample_rate} Hz")
            try:
                mel = convert_mel(mel, convention, self.mel_config)
            except ValueError as exc:
                raise VocoderError(f"{self.name}: {exc}") from None
        return mel


def file_identity(path: str | Path) -> str:
    from sourcetrace.fileio import sha256_file

    return sha256_file(Path(path))


def random_identity(kind: str, config: str, seed: int) -> str:
    return hashlib.sha256(f"{kind}:{config}:random:{seed}".encode()).hexdigest()
