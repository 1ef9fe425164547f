"""Mel spectrograms in the HiFi-GAN (jik876) convention that Grad-TTS and Matcha-TTS train on.

magnitude STFT (Hann window, reflect padding of (n_fft - hop) / 2 on both sides, no centring),
Slaney-normalised mel filters on the Slaney mel scale (librosa's defaults), natural log of the
values clamped at 1e-5.
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

    def as_dict(self) -> dict:
        return asdict(self)


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
    pad = (cfg.n_fft - cfg.hop_length) // 2
    wave = torch.nn.functional.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                      window=torch.hann_window(cfg.win_length, dtype=wave.dtype, device=wave.device),
                      center=False, return_complex=True)
    magnitude = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    mel = torch.log(torch.clamp(mel_filterbank(cfg).to(wave.device) @ magnitude, min=1e-5))
    return mel[0] if squeeze else mel
