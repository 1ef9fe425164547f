"""Handcrafted cepstral baselines: LFCC (the ASVspoof front end) and MFCC, pooled as statistics.

Per clip: cepstral coefficients with deltas and delta-deltas, then mean and standard deviation
over frames -> a fixed vector of 2 * 3 * n_coeffs values. No weights, so no download.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.fft import dct

from sourcetrace.attribution.extractors.base import EXTRACTOR_CODE_VERSION, FeatureExtractor, SpecNotTaken
from sourcetrace.core.errors import UsageError

#: The spec names of the two baselines and their filter scales.
SCALES = {"lfcc": "linear", "mfcc": "mel"}


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def triangular_filterbank(edges_hz: np.ndarray, n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangles between consecutive edges (len(edges) - 2 filters) on the rfft bin grid."""
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def deltas(feat: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over time (frames on axis 0), edges replicated, as in HTK."""
    padded = np.pad(feat, ((width, width), (0, 0)), mode="edge")
    n = len(feat)
    num = sum(t * (padded[width + t: width + t + n] - padded[width - t: width - t + n]) for t in range(1, width + 1))
    return num / (2.0 * sum(t * t for t in range(1, width + 1)))


class CepstralExtractor(FeatureExtractor):
    """`lfcc` (linear filters) or `mfcc` (mel filters): 25 ms Hamming frames every 10 ms, 512-point FFT."""

    def __init__(self, scale: str, n_filters: int = 20, n_coeffs: int = 20, n_fft: int = 512,
                 win_length: int = 400, hop_length: int = 160):
        if scale not in ("linear", "mel"):
            raise UsageError(f"scale must be 'linear' or 'mel', not {scale!r}")
        if n_coeffs > n_filters:
            raise UsageError(f"n_coeffs ({n_coeffs}) cannot exceed n_filters ({n_filters})")
        self.scale, self.n_filters, self.n_coeffs = scale, n_filters, n_coeffs
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        nyquist = self.sample_rate / 2.0
        if scale == "linear":
            edges = np.linspace(0.0, nyquist, n_filters + 2)
        else:
            edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(nyquist), n_filters + 2))
        self._filters = triangular_filterbank(edges, n_fft, self.sample_rate)
        self._window = np.hamming(win_length).astype(np.float32)
        self.batch_size = 64  # no padding is involved: batches only amortise Python overhead

    @classmethod
    def from_spec(cls, spec: str, **options) -> CepstralExtractor:
        """`lfcc` or `mfcc`, with no argument."""
        if spec not in SCALES:
            raise SpecNotTaken(spec)
        return cls(SCALES[spec])

    @property
    def name(self) -> str:
        return next(name for name, scale in SCALES.items() if scale == self.scale)

    @property
    def fingerprint(self) -> dict:
        return {
            "kind": self.name, "n_filters": self.n_filters, "n_coeffs": self.n_coeffs, "n_fft": self.n_fft,
            "win_length": self.win_length, "hop_length": self.hop_length, "sample_rate": self.sample_rate,
            "pooling": "mean+std of coefficients, deltas, delta-deltas", "dtype": "float32",
            "code_version": EXTRACTOR_CODE_VERSION,
        }

    def min_samples(self) -> int:
        return self.win_length

    def coefficients(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 3 * n_coeffs): cepstra, deltas, delta-deltas."""
        n_frames = 1 + (len(wave) - self.win_length) // self.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.win_length)[:: self.hop_length][:n_frames]
        power = np.abs(np.fft.rfft(frames * self._window, n=self.n_fft, axis=1)) ** 2
        log_energy = np.log(power.astype(np.float32) @ self._filters.T + 1e-10)
        cepstra = dct(log_energy, type=2, axis=1, norm="ortho")[:, : self.n_coeffs]
        d1 = deltas(cepstra)
        return np.concatenate([cepstra, d1, deltas(d1)], axis=1)

    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for wave in waves:
            coeffs = self.coefficients(np.asarray(wave, dtype=np.float32))
            out.append(np.concatenate([coeffs.mean(axis=0), coeffs.std(axis=0)]))
        return np.stack(out).astype(np.float32)
