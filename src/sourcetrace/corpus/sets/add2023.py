"""ADD 2023 track 3 (deepfake algorithm recognition) as distributed: folders of wav files and label
files of lines `ADD2023_T3_E_00000000.wav 3` (file, class 0-7).

The label files are the `.txt` files in the root or one folder down whose lines have that form; each clip is found
by its file name anywhere under the root (a name found twice is refused). The split is the letter
of the clip id (`T` train, `D` dev, `E` eval), else the label file's name. `checkpoint` and
`architecture` are the class as shipped; a class absent from training is the set's unknown one,
which the protocols mark `unknown` in the query.
"""

from __future__ import annotations

import re
from pathlib import Path

from sourcetrace.corpus.sets.base import DatasetFormat, Scan, numbered_lines, protocol_fields, relative

CLASSES = tuple(str(i) for i in range(8))
LABEL_LINE = re.compile(r"^\S+\.wav\s+\S+$")
CLIP_SPLIT = re.compile(r"^ADD2023_T3_(?P<letter>[TDE])_")
SPLIT_OF = {"T": "train", "D": "dev", "E": "eval"}


def _label_files(root: Path) -> list[Path]:
    """The label files: `.txt` files at most one folder down (not a corpus tree's transcripts)."""
    found = []
    for path in sorted([*root.glob("*.txt"), *root.glob("*/*.txt")]):
        first = next((line for _, line in numbered_lines(path)), "")
        if LABEL_LINE.match(first.strip()) and first.startswith("ADD2023_T3_"):
            found.append(path)
    return found


def detect(root: Path) -> bool:
    return bool(_label_files(root))


def _split(clip: str, labels: Path) -> str:
    match = CLIP_SPLIT.match(clip)
    if match:
        return SPLIT_OF[match["letter"]]
    return next((s for s in ("train", "dev", "eval") if s in labels.name.lower()), "")


def scan(root: Path) -> Scan:
    out = Scan(columns=("system", "split"))
    located: dict[str, str | None] = {}  # file name -> its path under the root (None: found twice)
    for wav in root.rglob("*.wav"):
        located[wav.name] = None if wav.name in located else relative(root, wav)
    for labels in _label_files(root):
        for where, fields in protocol_fields(labels, 2, "FILE CLASS", out):
            name, label = fields
            if label not in CLASSES:
                out.skip(where, f"unknown system label {label!r} (classes 0-7)")
                continue
            if name not in located:
                out.skip(where, f"missing file {name!r}: no such wav under {root}")
                continue
            path = located[name]
            if path is None:
                out.skip(where, f"{name!r} is found in two folders under {root}: which one is meant?")
                continue
            stem = name[:-4]
            out.rows.append((where, {"clip_id": stem, "path": path, "architecture": label, "checkpoint": label,
                                     "prompt_id": stem, "text": "", "system": label, "split": _split(stem, labels)}))
    return out


FORMAT = DatasetFormat(
    name="add2023-t3", title="ADD 2023 track 3 (deepfake algorithm recognition)",
    download="http://addchallenge.cn/add2023",
    root="the folder holding the track's wav folders and label .txt files",
    detect=detect, scan=scan)
