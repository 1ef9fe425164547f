"""Compile, once and alone, the numba kernels the project runs, into numba's on-disk cache.

numba's cache is not safe for processes that compile the same cached function at once: two that
first compile a kernel with several signatures (librosa's pyin helpers, compiled at import) can
number their cache entries differently, and one then loads the other's machine code (a segfault
seen in CI on a fresh venv). `tools/setup.sh` runs this after installing, so parallel jobs (Slurm
arrays, test workers) only read the cache.
"""

from __future__ import annotations

import numpy as np


def warm() -> list[str]:
    """Compile (or load) every cached kernel a run reaches; the names of what was warmed."""
    from sourcetrace.attribution.knn_select import select_nearest

    select_nearest(np.zeros((1, 2), np.float32), 1)
    warmed = ["kNN neighbour selection"]
    try:
        from sourcetrace.generators.pitch import pyin
    except ImportError:  # the light core: no TTS stack, no pyin
        return warmed
    tone = np.sin(2 * np.pi * 150 * np.arange(22050) / 22050)
    for dtype in (np.float32, np.float64):  # FastPitch's pitch (float32 clips); both kernels librosa declares
        pyin(tone.astype(dtype), fmin=65.0, fmax=2093.0, frame_length=1024, hop_length=256, sr=22050, fill_na=0.0)
    return [*warmed, "pyin (librosa's helpers and the banded Viterbi)"]


if __name__ == "__main__":
    print(f"[numba] cache warmed: {', '.join(warm())}")
