"""Audio input: any file libsndfile reads -> mono float32 at the extractor's sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import SourcetraceError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class AudioRejected(SourcetraceError, ValueError):
    """A clip that cannot serve as input; `reason` is short and stable enough to group by."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read, downmix (mean of channels) and resample (soxr, high quality) one clip.

    Raises AudioRejected for unreadable files, empty audio and non-finite samples. Silence is valid.
    """
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean "cannot decode"
        raise AudioRejected(path, f"unreadable audio ({type(exc).__name__}: {exc})") from None
    if data.shape[0] == 0:
        raise AudioRejected(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioRejected(path, "non-finite samples (NaN or inf)")
    mono = data.mean(axis=1, dtype=np.float32)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if mono.size == 0:
        raise AudioRejected(path, f"empty audio after resampling {file_rate} Hz -> {sample_rate} Hz")
    return np.ascontiguousarray(mono)
