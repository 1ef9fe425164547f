"""LJSpeech 1.1: `metadata.csv` (`id|transcription|normalized transcription`) and `wavs/<id>.wav`.

The standard split (12,500 train / 100 val / 500 test) ships with the project
(`ljspeech_split.tsv`); the 600 val + test transcripts are the study's prompt set.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import read_user_text
from sourcetrace.datasets.prompts import DatasetError, Prompt

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    audio: Path
    text: str  # the normalized transcription (numbers and abbreviations spelled out)
    speaker: str


def standard_split(path: str | Path | None = None) -> dict[str, str]:
    """utterance id -> train | val | test (the shipped standard split unless `path` is given)."""
    if path is None:
        text = resources.files(__package__).joinpath("ljspeech_split.tsv").read_text(encoding="utf-8")
        source = "ljspeech_split.tsv"
    else:
        text, source = read_user_text(path), str(path)
    split = {}
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 2 or fields[1] not in SPLITS or not fields[0]:
            raise DatasetError(f"{source}: line {n}: expected '<id><TAB>train|val|test', got {line!r}")
        if fields[0] in split:
            raise DatasetError(f"{source}: line {n}: {fields[0]} listed twice")
        split[fields[0]] = fields[1]
    return split


class LJSpeech:
    """Reader of an LJSpeech-format folder; every row of metadata.csv is checked when opened."""

    speaker = "LJ"

    def __init__(self, root: str | Path, split: dict[str, str] | None = None, check_audio: bool = True):
        self.root = Path(root)
        metadata = self.root / "metadata.csv"
        if not metadata.is_file():
            raise DatasetError(f"{metadata}: not found; is {self.root} an LJSpeech-1.1 folder (metadata.csv, wavs/)?")
        self.utterances: dict[str, Utterance] = {}
        problems = []
        for n, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split("|")
            if len(fields) != 3:
                problems.append(f"line {n}: expected 'id|transcription|normalized transcription', got {len(fields)} field(s)")
                continue
            utt_id, raw, normalized = (f.strip() for f in fields)
            text = normalized or raw
            audio = self.root / "wavs" / f"{utt_id}.wav"
            if not utt_id or not text:
                problems.append(f"line {n}: empty {'id' if not utt_id else 'transcription'}")
            elif utt_id in self.utterances:
                problems.append(f"line {n}: duplicate id {utt_id!r}")
            elif check_audio and not audio.is_file():
                problems.append(f"line {n}: missing audio wavs/{utt_id}.wav")
            else:
                self.utterances[utt_id] = Utterance(utt_id, audio, text, self.speaker)
        if problems:
            raise DatasetError(f"{metadata}: " + "; ".join(problems[:20])
                               + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""))
        self.split = split if split is not None else standard_split()
        unknown = sorted(set(self.utterances) - set(self.split))
        if unknown:
            raise DatasetError(f"{metadata}: {len(unknown)} id(s) not in the split, e.g. {unknown[:3]}; "
                               "pass the split file that goes with this dataset")

    def items(self, split: str) -> list[Utterance]:
        """The utterances of one split that this folder holds, in id order."""
        if split not in SPLITS:
            raise UsageError(f"split must be one of {SPLITS}, not {split!r}")
        return [u for i, u in sorted(self.utterances.items()) if self.split[i] == split]

    def prompts(self) -> list[Prompt]:
        """The study's prompt set: the val and test transcripts (600 in the full dataset)."""
        return [Prompt(u.utt_id, u.text) for u in sorted(self.items("val") + self.items("test"), key=lambda u: u.utt_id)]
