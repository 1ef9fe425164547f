"""Small datasets in the LJSpeech and HiFi-TTS formats, spoken by espeak-ng: a different voice
stands in for each speaker, so fine-tuning experiments have real changes of speaker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sourcetrace.core.espeak import sentences, speak
from sourcetrace.core.fileio import atomic_path, write_text_atomic
from sourcetrace.datasets.ljspeech import LJSpeech
from sourcetrace.datasets.prompts import DatasetError

LJ_VOICE = ("en-us+f3", 165, 55)       # voice, words per minute, pitch: the "LJ" speaker
HIFITTS_VOICE = ("en-gb+m3", 150, 40)  # the new speaker of the study's fine-tune (9136)
# One espeak-ng voice per HiFi-TTS speaker id (its ten speakers), all distinct from LJ_VOICE.
HIFITTS_VOICES = {
    "9136": HIFITTS_VOICE,
    "92": ("en-us+f2", 170, 70), "6097": ("en-gb-scotland+m1", 155, 35), "6670": ("en-us+m5", 145, 45),
    "6671": ("en-gb-x-rp+f4", 160, 65), "8051": ("en-029+m2", 150, 50), "9017": ("en-gb-x-gbclan+f1", 165, 60),
    "11614": ("en-us+m7", 140, 30), "11697": ("en-gb+f5", 175, 75), "12787": ("en-gb-x-gbcwmd+m4", 150, 42),
}


def make_ljspeech_like(out: str | Path, n_train: int, n_val: int, n_test: int, seed: int = 0) -> LJSpeech:
    """metadata.csv, wavs/ (22.05 kHz) and split.tsv; reused clip by clip when rerun."""
    out = Path(out)
    n = n_train + n_val + n_test
    texts = sentences(n, seed=seed)
    voice, speed, pitch = LJ_VOICE
    ids = [f"LJ{1 + i // 1000:03d}-{i % 1000 + 1:04d}" for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)  # which ids go to which split
    split = {ids[i]: "train" for i in order[:n_train]}
    split.update({ids[i]: "val" for i in order[n_train:n_train + n_val]})
    split.update({ids[i]: "test" for i in order[n_train + n_val:]})
    for utt_id, text in zip(ids, texts):
        wav = out / "wavs" / f"{utt_id}.wav"
        if not wav.exists():
            speak(text, wav, voice=voice, speed=speed, pitch=pitch)
    write_text_atomic(out / "metadata.csv", "".join(f"{i}|{t}|{t}\n" for i, t in zip(ids, texts)))
    write_text_atomic(out / "split.tsv", "".join(f"{i}\t{split[i]}\n" for i in ids))
    return LJSpeech(out, split=split)


def make_hifitts_like(out: str | Path, n_train: int, speaker: str = "9136") -> Path:
    """`<speaker>_manifest_other_train.json` and 44.1 kHz FLAC clips under audio/, spoken by the
    speaker's own voice (HIFITTS_VOICES) over its own sentences."""
    out = Path(out)
    if speaker not in HIFITTS_VOICES:
        raise DatasetError(f"no espeak-ng voice stands in for HiFi-TTS speaker {speaker!r}; "
                           f"known: {', '.join(HIFITTS_VOICES)}")
    voice, speed, pitch = HIFITTS_VOICES[speaker]
    seed = 1 if speaker == "9136" else int(speaker)  # 9136 keeps the sentences it always had
    lines = []
    for i, text in enumerate(sentences(n_train, seed=seed)):
        rel = f"audio/{speaker}_other/book/{speaker}_{i:05d}.flac"
        flac = out / rel
        if not flac.exists():
            tmp_wav = flac.with_suffix(".espeak.wav")
            speak(text, tmp_wav, voice=voice, speed=speed, pitch=pitch)
            wave, rate = sf.read(tmp_wav, dtype="float32")
            tmp_wav.unlink()
            if wave.size == 0:
                raise DatasetError(f"espeak-ng produced no audio for {text!r}")
            with atomic_path(flac) as tmp:
                sf.write(tmp, soxr.resample(wave, rate, 44100), 44100, format="FLAC")
        duration = sf.info(str(flac)).duration
        lines.append(json.dumps({"audio_filepath": rel, "duration": round(duration, 3), "text": text,
                                 "text_no_preprocessing": text, "text_normalized": text}))
    manifest = out / f"{speaker}_manifest_other_train.json"
    write_text_atomic(manifest, "\n".join(lines) + "\n")
    return manifest
