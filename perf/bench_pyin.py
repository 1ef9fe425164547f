"""FastPitch's training pitch: `generators.pitch.pyin` against `librosa.pyin` on the same clips, in one run.

Both give the same arrays (checked here on every clip, and in tests/test_pitch.py); the speed-up is
the banded Viterbi's. Clips: espeak-ng sentences at 22.05 kHz (the miniature study's speech). Usage:

    python perf/bench_pyin.py [--clips 10] [--json perf/results/cpu-2core-pyin.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()

    import librosa

    from sourcetrace.core.audio import load_audio
    from sourcetrace.core.espeak import sentences, speak
    from sourcetrace.generators.pitch import pyin

    options = {"fmin": 65.4, "fmax": 2093.0, "frame_length": 1024, "hop_length": 256, "sr": 22050, "fill_na": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        waves = [load_audio(speak(text, Path(tmp) / f"{i}.wav"), 22050) for i, text in enumerate(sentences(args.clips))]
    for method in (librosa.pyin, pyin):  # compile / load both numba kernels before timing
        method(waves[0][:4096], **options)
    load_at_start = os.getloadavg()[0]
    seconds = {"librosa.pyin": 0.0, "sourcetrace pyin": 0.0}
    for wave in waves:
        t0 = time.perf_counter()
        theirs = librosa.pyin(wave, **options)
        t1 = time.perf_counter()
        ours = pyin(wave, **options)
        t2 = time.perf_counter()
        seconds["librosa.pyin"] += t1 - t0
        seconds["sourcetrace pyin"] += t2 - t1
        if not all(np.array_equal(a, b) for a, b in zip(theirs, ours)):
            raise SystemExit("the two pitch tracks differ: generators/pitch.py no longer matches this librosa")
    audio = sum(len(w) for w in waves) / 22050
    report = {"command": "python perf/bench_pyin.py " + f"--clips {args.clips}", "clips": len(waves),
              "audio_seconds": round(audio, 2), "identical": True, "librosa": librosa.__version__,
              "seconds": {k: round(v, 3) for k, v in seconds.items()},
              "speedup": round(seconds["librosa.pyin"] / seconds["sourcetrace pyin"], 2),
              "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]}}
    print(f"{len(waves)} clips, {audio:.1f} s of audio: librosa.pyin {seconds['librosa.pyin']:.2f} s, "
          f"sourcetrace pyin {seconds['sourcetrace pyin']:.2f} s ({report['speedup']}x), identical")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
