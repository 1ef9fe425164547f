"""Real speech without downloads: Debian's espeak-ng renders text with a choice of voices."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import atomic_path


class EspeakMissing(SourcetraceError, RuntimeError):
    pass


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissing("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu), "
                            "or run tools/setup.sh, which installs it")
    return exe


def speak(text: str, out_wav: str | Path, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> Path:
    """Render `text` to a 22.05 kHz 16-bit wav; written atomically, deterministic for its inputs."""
    out_wav = Path(out_wav)
    with atomic_path(out_wav) as tmp:
        subprocess.run([espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(tmp), text],
                       check=True, capture_output=True)
    return out_wav


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` distinct, pronounceable English sentences drawn with a fixed seed."""
    rng = random.Random(seed)
    subjects = ["The old sailor", "A quiet student", "My neighbour", "The tall doctor", "Every child",
                "The young painter", "A tired driver", "Our teacher", "The clever fox", "His sister"]
    verbs = ["carried", "noticed", "painted", "borrowed", "described", "found", "repaired", "followed",
             "ordered", "remembered"]
    objects = ["a wooden boat", "the broken clock", "seven red apples", "an empty letter", "the northern road",
               "a silver coin", "the morning paper", "two grey horses", "a paper lantern", "the garden gate"]
    endings = ["before the storm.", "after dinner.", "near the river.", "in the late afternoon.",
               "without a word.", "during the long winter.", "at the station.", "with great care.",
               "for the third time.", "under the bright lamp."]
    combos = [(s, v, o, e) for s in subjects for v in verbs for o in objects for e in endings]
    return [" ".join(parts) for parts in rng.sample(combos, n)]
