"""Log-mel spectrograms, with the convention spelled out, and conversion between conventions.

Two conventions occur in the study, both with Slaney-normalised mel filters on the Slaney scale
(librosa's defaults) of a magnitude STFT and natural logs:
- "jik876" framing + "clamp" guard: HiFi-GAN's (Grad-TTS, Matcha-TTS): periodic Hann window,
  reflect padding of (n_fft - hop) / 2 on both sides, no centring, log(max(mel, 1e-5)).
- "centered" framing + "add" guard: NeMo's (FastPitch, NeMo HiFi-GAN): symmetric Hann window,
  centred frames with zero padding, log(mel + 1e-5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    framing: str = "jik876"   # or "centered"
    log_guard: str = "clamp"  # log(max(mel, floor)); or "add": log(mel + floor)
    log_floor: float = 1e-5

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise ValueError(f"mel framing {self.framing!r}: expected one of {', '.join(FRAMINGS)}")
        if self.log_guard not in LOG_GUARDS:
            raise ValueError(f"mel log_guard {self.log_guard!r}: expected one of {', '.join(LOG_GUARDS)}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"mel f_min/f_max {self.f_min}/{self.f_max}: need 0 <= f_min < f_max <= sample_rate / 2")

    def as_dict(self) -> dict:
        return asdict(self)


FRAMINGS = ("jik876", "centered")
LOG_GUARDS = ("clamp", "add")


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    mels = hz / f_sp
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / log_step, mels)


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(log_step * (mels - min_log_mel)), f_sp * mels)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1), equal to librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)."""
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_points = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(cfg.f_min), _hz_to_mel_slaney(cfg.f_max), cfg.n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def mel_spectrogram(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(samples,) or (batch, samples) float waveform in [-1, 1] -> (…, n_mels, frames) log mel."""
    squeeze = wave.dim() == 1
    wave = wave.unsqueeze(0) if squeeze else wave
    if cfg.framing == "jik876":
        pad = (cfg.n_fft - cfg.hop_length) // 2
        wave = torch.nn.functional.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=torch.hann_window(cfg.win_length, dtype=wave.dtype, device=wave.device),
                          center=False, return_complex=True)
        magnitude = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    else:
        spec = torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=torch.hann_window(cfg.win_length, periodic=False, dtype=wave.dtype, device=wave.device),
                          center=True, pad_mode="constant", return_complex=True)
        magnitude = spec.abs()
    mel = _log(mel_filterbank(cfg).to(wave.device) @ magnitude, cfg)
    return mel[0] if squeeze else mel


def _log(mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    if cfg.log_guard == "add":
        return torch.log(mel + cfg.log_floor)
    return torch.log(torch.clamp(mel, min=cfg.log_floor))


def same_filterbank(a: MelConfig, b: MelConfig) -> bool:
    keys = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def convert_mel(mel: torch.Tensor, source: MelConfig, target: MelConfig) -> torch.Tensor:
    """A log mel of `source`'s convention in `target`'s: the log guard is undone and reapplied.
    Frames map one to one (the framings' frame centres differ by half a hop, (n_fft - hop) / 2
    samples against n_fft / 2: a 5.8 ms shift at 22.05 kHz / hop 256, which a vocoder absorbs).
    Filterbanks must be equal: resampling mel bins is not a conversion this project makes."""
    if not same_filterbank(source, target):
        raise ValueError(f"mel conventions differ beyond framing and log guard: {source} vs {target}")
    if (source.log_guard, source.log_floor) == (target.log_guard, target.log_floor):
        return mel
    linear = torch.exp(mel)
    if source.log_guard == "add":
        linear = torch.clamp(linear - source.log_floor, min=0.0)
    return _log(linear, target)
