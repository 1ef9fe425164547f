"""HiFi-TTS: per-speaker JSON-lines manifests `<speaker>_manifest_<clean|other>_<train|dev|test>.json`.

Each line: `{"audio_filepath": "audio/...flac", "duration": s, "text": ..., "text_normalized": ...}`,
paths relative to the dataset root. The study fine-tunes on 500 random training clips of speaker
9136, drawn here with a fixed seed from the id-sorted list, so every machine draws the same 500.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sourcetrace.datasets.ljspeech import Utterance
from sourcetrace.datasets.prompts import DatasetError

MANIFEST = re.compile(r"^(?P<speaker>\d+)_manifest_(?P<quality>clean|other)_(?P<split>train|dev|test)\.json$")
STUDY_SPEAKER = "9136"
STUDY_SUBSET = 500


class HiFiTTS:
    def __init__(self, root: str | Path, check_audio: bool = True):
        self.root = Path(root)
        self.manifests = {}
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                match = MANIFEST.match(path.name)
                if match:
                    self.manifests[(match["speaker"], match["split"])] = path
        if not self.manifests:
            raise DatasetError(f"{self.root}: no '<speaker>_manifest_<clean|other>_<split>.json' files; "
                               "is this a HiFi-TTS folder?")
        self.check_audio = check_audio

    def speakers(self) -> list[str]:
        return sorted({speaker for speaker, _ in self.manifests})

    def items(self, speaker: str, split: str = "train") -> list[Utterance]:
        path = self.manifests.get((speaker, split))
        if path is None:
            raise DatasetError(f"{self.root}: no {split} manifest for speaker {speaker}; speakers: {', '.join(self.speakers())}")
        out, problems = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rel, text = row["audio_filepath"], (row.get("text_normalized") or row["text"]).strip()
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                problems.append(f"line {n}: not a manifest entry ({type(exc).__name__}: {exc})")
                continue
            audio = (self.root / rel).resolve()
            if self.root.resolve() not in audio.parents:
                problems.append(f"line {n}: audio_filepath {rel!r} escapes the dataset folder")
            elif not text:
                problems.append(f"line {n}: empty text")
            elif self.check_audio and not audio.is_file():
                problems.append(f"line {n}: missing audio {rel}")
            else:
                out.append(Utterance(Path(rel).stem, audio, text, speaker))
        if problems:
            raise DatasetError(f"{path}: " + "; ".join(problems[:20]))
        return sorted(out, key=lambda u: u.utt_id)

    def study_subset(self, speaker: str = STUDY_SPEAKER, n: int = STUDY_SUBSET, seed: int = 0) -> list[Utterance]:
        """`n` training clips of `speaker` drawn without replacement with a fixed seed."""
        items = self.items(speaker, "train")
        if len(items) < n:
            raise DatasetError(f"{self.manifests[(speaker, 'train')]}: {len(items)} clips, {n} needed")
        chosen = np.random.default_rng(seed).choice(len(items), n, replace=False)
        return [items[i] for i in sorted(chosen)]
