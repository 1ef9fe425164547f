"""Audio input: any file libsndfile reads -> mono float32 at the extractor's sample rate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sourcetrace.core.errors import SourcetraceError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# The longest clip an extractor takes by default (`--max-seconds`): an SSL model's memory grows with
# the square of a clip's frames (one hour of audio took > 6 GB even with a tiny model); a study clip
# is under 15 s, a long recording is cut into parts by the user.
MAX_CLIP_SECONDS = 60.0


class AudioRejected(SourcetraceError, ValueError):
    """A clip that cannot serve as input; `reason` is short and stable enough to group by."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a clip without opening it: missing, or not a regular file (a FIFO
    would block its reader forever, a device never ends). None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing file"
    if stat.S_ISREG(mode):
        return None
    kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
    return f"not a regular file ({kind}): give an audio file"


def require_regular_file(path: str | Path) -> None:
    """Refuse anything but a regular file; a missing one is left for the decoder to report."""
    problem = file_problem(path)
    if problem and problem != "missing file":
        raise AudioRejected(path, problem)


def load_audio(path: str | Path, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Read, downmix (mean of channels) and resample (soxr, high quality) one clip.

    Raises AudioRejected for what is not a regular file, unreadable files, empty audio, non-finite
    samples and, with `max_seconds`, a clip longer than that (told from the header, before decoding).
    Silence is valid.
    """
    require_regular_file(path)
    if max_seconds is not None:
        try:
            info = sf.info(str(path))
        except Exception as exc:  # noqa: BLE001 - libsndfile raises several types; all mean "cannot decode"
            raise AudioRejected(path, f"unreadable audio ({type(exc).__name__}: {exc})") from None
        seconds = info.frames / max(info.samplerate, 1)
        if seconds > max_seconds:
            raise AudioRejected(path, f"{seconds:.1f} s long, above the limit of {max_seconds:g} s (--max-seconds): "
                                      "cut the recording into shorter clips, or raise the limit")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types; all mean "cannot decode"
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
