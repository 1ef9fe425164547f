"""ASVspoof 2019 LA as distributed: `ASVspoof2019_LA_{train,dev,eval}/flac/*.flac` and the CM protocols
`ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt`, lines
`SPEAKER FILE - SYSTEM KEY` (`-` system for bonafide).

Train and dev hold A01-A06, eval A07-A19; the set defines eval's A16 as A04 and A19 as A06, so
`checkpoint` (the label attribution scores) says A04/A06 for them while `system` keeps A16/A19.
Bonafide rows are kept, labelled `bonafide` (the real class; protocols choose by `key`).
"""

from __future__ import annotations

from pathlib import Path

from sourcetrace.corpus.sets.base import BONAFIDE, KEYS, DatasetFormat, Scan, protocol_fields, relative

SYSTEMS = tuple(f"A{i:02d}" for i in range(1, 20))
SAME_AS = {"A16": "A04", "A19": "A06"}  # eval systems the set defines as train systems
PROTOCOLS = "ASVspoof2019_LA_cm_protocols"
SPLITS = (("train", "ASVspoof2019.LA.cm.train.trn.txt"), ("dev", "ASVspoof2019.LA.cm.dev.trl.txt"),
          ("eval", "ASVspoof2019.LA.cm.eval.trl.txt"))


def _base(root: Path) -> Path:
    """The folder holding the protocols: DATASET_ROOT itself, or its `LA/` (the zip unpacks to LA/)."""
    return root / "LA" if not (root / PROTOCOLS).is_dir() and (root / "LA" / PROTOCOLS).is_dir() else root


def detect(root: Path) -> bool:
    return (_base(root) / PROTOCOLS).is_dir()


def scan(root: Path) -> Scan:
    base = _base(root)
    out = Scan(columns=("speaker", "system", "key", "split"))
    for split, name in SPLITS:
        audio = relative(root, base / f"ASVspoof2019_LA_{split}" / "flac")
        for where, fields in protocol_fields(base / PROTOCOLS / name, 5, "SPEAKER FILE - SYSTEM KEY", out):
            speaker, file, _, system, key = fields
            if key not in KEYS:
                out.skip(where, f"key {key!r} is neither {' nor '.join(KEYS)}")
                continue
            if (system == "-") != (key == BONAFIDE) or (system != "-" and system not in SYSTEMS):
                out.skip(where, f"unknown system label {system!r} for key {key!r} (A01-A19 for spoof, '-' for bonafide)")
                continue
            label = BONAFIDE if system == "-" else SAME_AS.get(system, system)
            out.rows.append((where, {
                "clip_id": file, "path": f"{audio}/{file}.flac", "architecture": label, "checkpoint": label,
                "prompt_id": file, "text": "", "speaker": speaker, "system": system, "key": key, "split": split}))
    return out


FORMAT = DatasetFormat(
    name="asvspoof2019-la", title="ASVspoof 2019 logical access (LA)",
    download="https://datashare.ed.ac.uk/handle/10283/3336",
    root="the folder holding ASVspoof2019_LA_cm_protocols/ (the unpacked LA/, or its parent)",
    detect=detect, scan=scan)
