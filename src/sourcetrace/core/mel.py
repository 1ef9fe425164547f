"""Log-mel spectrograms, with the convention spelled out, and conversion between conventions.

Three conventions occur in the study, all with Slaney-normalised mel filters on the Slaney scale
(librosa's defaults) of a magnitude STFT and natural logs:
- "jik876" framing + "clamp" guard: HiFi-GAN's (Grad-TTS, Matcha-TTS; NeMo's HiFi-GAN frames
  alike): periodic Hann window, reflect padding of (n_fft - hop) / 2 on both sides, no centring,
  log(max(mel, 1e-5)).
- "centered" framing + "add" guard: NeMo's FastPitch: symmetric Hann window, centred frames with
  zero padding, log(mel + 1e-5).
- "centered-reflect" framing + "clamp" guard: DeepLearningExamples' FastPitch mels, which its
  HiFi-GAN (FastPitch's vocoder in the study) was fine-tuned on: periodic Hann window, centred
  frames with reflect padding, log(max(mel, 1e-5)).
BigVGAN's is jik876's. Vocos's (torchaudio's MelSpectrogram defaults) differs in rate and filterbank:
24 kHz, "htk" filterbank (HTK scale, unnormalised triangles), "centered-reflect" framing (periodic
Hann window, centred frames with reflect padding), log(max(mel, 1e-7)); `reanalyse_mel` carries a
mel of one rate and filterbank into another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from sourcetrace.core.errors import UsageError


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    framing: str = "jik876"   # or "centered", "centered-reflect"
    log_guard: str = "clamp"  # log(max(mel, floor)); or "add": log(mel + floor)
    log_floor: float = 1e-5
    filterbank: str = "slaney"  # librosa's default (Slaney scale and area normalisation); or "htk" (torchaudio's)

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise UsageError(f"mel framing {self.framing!r}: expected one of {', '.join(FRAMINGS)}")
        if self.filterbank not in FILTERBANKS:
            raise UsageError(f"mel filterbank {self.filterbank!r}: expected one of {', '.join(FILTERBANKS)}")
        if self.log_guard not in LOG_GUARDS:
            raise UsageError(f"mel log_guard {self.log_guard!r}: expected one of {', '.join(LOG_GUARDS)}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise UsageError(f"mel f_min/f_max {self.f_min}/{self.f_max}: need 0 <= f_min < f_max <= sample_rate / 2")

    def as_dict(self) -> dict:
        """The fields; `filterbank` only when not "slaney", so the conventions that predate the
        field keep their identity (generators name their feature caches after it)."""
        fields = asdict(self)
        if self.filterbank == "slaney":
            del fields["filterbank"]
        return fields


FRAMINGS = ("jik876", "centered", "centered-reflect")
LOG_GUARDS = ("clamp", "add")
FILTERBANKS = ("slaney", "htk")


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


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mels: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mels, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1), equal to librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) for the
    "slaney" filterbank, to torchaudio's melscale_fbanks(..., norm=None, mel_scale="htk").T for "htk"."""
    to_mel, to_hz = (_hz_to_mel_htk, _mel_to_hz_htk) if cfg.filterbank == "htk" else (_hz_to_mel_slaney, _mel_to_hz_slaney)
    fft_freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    mel_points = to_hz(np.linspace(to_mel(cfg.f_min), to_mel(cfg.f_max), cfg.n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    if cfg.filterbank == "slaney":
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
                          window=torch.hann_window(cfg.win_length, periodic=cfg.framing == "centered-reflect",
                                                   dtype=wave.dtype, device=wave.device),
                          center=True, pad_mode="reflect" if cfg.framing == "centered-reflect" else "constant",
                          return_complex=True)
        magnitude = spec.abs()
    mel = _log(mel_filterbank(cfg).to(wave.device) @ magnitude, cfg)
    return mel[0] if squeeze else mel


def _log(mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    if cfg.log_guard == "add":
        return torch.log(mel + cfg.log_floor)
    return torch.log(torch.clamp(mel, min=cfg.log_floor))


def same_filterbank(a: MelConfig, b: MelConfig) -> bool:
    keys = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max", "filterbank")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def convert_mel(mel: torch.Tensor, source: MelConfig, target: MelConfig) -> torch.Tensor:
    """A log mel of `source`'s convention in `target`'s: the log guard is undone and reapplied.
    Frames map one to one (the framings' frame centres differ by half a hop, (n_fft - hop) / 2
    samples against n_fft / 2: a 5.8 ms shift at 22.05 kHz / hop 256, which a vocoder absorbs).
    Filterbanks must be equal: resampling mel bins is not a conversion this project makes."""
    if not same_filterbank(source, target):
        raise UsageError(f"mel conventions differ beyond framing and log guard: {source} vs {target}")
    if (source.log_guard, source.log_floor) == (target.log_guard, target.log_floor):
        return mel
    return _log(_linear(mel, source), target)


def _linear(mel: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """The magnitude mel under a log mel (the "add" guard's floor taken off again)."""
    linear = torch.exp(mel)
    if cfg.log_guard == "add":
        linear = torch.clamp(linear - cfg.log_floor, min=0.0)
    return linear


def _frame_centre(cfg: MelConfig) -> float:
    """Samples from i x hop to the centre of frame i: jik876 pads (n_fft - hop) / 2 without centring."""
    return cfg.n_fft / 2 - (cfg.n_fft - cfg.hop_length) // 2 if cfg.framing == "jik876" else 0.0


@lru_cache(maxsize=8)
def _spectrum_from_mel(cfg: MelConfig) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) pseudo-inverse of the filterbank: a mel -> the least-squares linear spectrum."""
    return torch.linalg.pinv(mel_filterbank(cfg).double())


@lru_cache(maxsize=8)
def _resampled_bins(source: MelConfig, target: MelConfig) -> torch.Tensor:
    """(target bins, source bins): linear interpolation of a magnitude spectrum onto the target's FFT
    bin frequencies; bins above the source's Nyquist frequency get nothing."""
    source_step = source.sample_rate / source.n_fft
    position = torch.arange(target.n_fft // 2 + 1, dtype=torch.float64) * (target.sample_rate / target.n_fft) / source_step
    n_source = source.n_fft // 2 + 1
    inside = position <= n_source - 1
    low = position.floor().long().clamp(max=n_source - 1)
    high = (low + 1).clamp(max=n_source - 1)
    weight = (position - low)
    matrix = torch.zeros(len(position), n_source, dtype=torch.float64)
    rows = torch.arange(len(position))
    matrix.index_put_((rows, low), torch.where(inside, 1 - weight, 0.0), accumulate=True)
    matrix.index_put_((rows, high), torch.where(inside, weight, 0.0), accumulate=True)
    return matrix


def reanalysed_frames(frames: int, source: MelConfig, target: MelConfig) -> int:
    """How many `target` frames span the audio of `frames` `source` frames (frames x hop samples)."""
    return round(frames * source.hop_length * target.sample_rate / (source.sample_rate * target.hop_length))


def reanalyse_mel(mel: torch.Tensor, source: MelConfig, target: MelConfig) -> torch.Tensor:
    """A (n_mels, frames) log mel of `source`'s convention re-analysed into `target`'s, whose rate,
    filterbank and hop may differ: magnitude mel -> linear spectrum by the pseudo-inverse of the
    source filterbank (negative values cut to 0) -> interpolated onto the target's FFT bin
    frequencies (nothing above the source's Nyquist frequency) -> frames interpolated at the
    target's frame centres (`reanalysed_frames` of them) -> target filterbank and log guard.
    Content above the source's f_max is lost: it comes out as silence."""
    spectrum = (_spectrum_from_mel(source).to(mel.device) @ _linear(mel, source).double()).clamp(min=0.0)
    spectrum = _resampled_bins(source, target).to(mel.device) @ spectrum
    count = mel.shape[-1]
    seconds = (torch.arange(reanalysed_frames(count, source, target), dtype=torch.float64, device=mel.device)
               * target.hop_length + _frame_centre(target)) / target.sample_rate
    position = ((seconds * source.sample_rate - _frame_centre(source)) / source.hop_length).clamp(0, count - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=count - 1)
    weight = position - low
    spectrum = spectrum[:, low] * (1 - weight) + spectrum[:, high] * weight
    return _log((mel_filterbank(target).to(mel.device).double() @ spectrum).to(mel.dtype), target)
