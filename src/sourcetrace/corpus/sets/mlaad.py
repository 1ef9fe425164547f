"""MLAAD (v5 and later) as distributed: `fake/<language>/<model>/*.wav`, each model folder with a
`meta.csv` separated by pipes (path|original_file|language|is_original_language|duration|
training_data|model_name|architecture|transcript); and, where present (the dataset root or its
`protocols/`), the source-tracing protocols of the Interspeech 2025 special session: `train.csv`,
`dev.csv`, `eval.csv` (`path,model_name`) and per-condition lists such as
`dev___lang_not_seen___model_not_seen.csv` (`condition` column).

Labels: `checkpoint` = model_name, `architecture` = architecture; the prompt is the original
M-AILABS file, so text-disjoint splits can group clips by it. MLAAD ships no bonafide audio
(its real counterpart is M-AILABS). A clip in no list has an empty `split`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from sourcetrace.corpus.sets.base import DatasetFormat, Scan, numbered_lines, relative

META = "meta.csv"
META_FIELDS = ("path", "original_file", "language", "is_original_language", "duration", "training_data",
               "model_name", "architecture", "transcript")
PROTOCOL_FOLDERS = ("", "protocols")
LIST = re.compile(r"^(?P<split>train|dev|eval)(?:___(?P<condition>.+))?\.csv$")


def detect(root: Path) -> bool:
    return (root / "fake").is_dir() and next((root / "fake").glob(f"*/*/{META}"), None) is not None


def _clip_path(value: str, folder: str) -> str:
    """A meta or protocol path as a path under the root: from its `fake/` on where it names one
    (lists written from another root), else relative to the meta.csv's folder."""
    while value.startswith("./"):
        value = value[2:]
    parts = value.split("/")
    return "/".join(parts[parts.index("fake"):]) if "fake" in parts else f"{folder}/{value}"


def scan(root: Path) -> Scan:
    out = Scan(columns=("language", "original_file", "is_original_language", "duration", "training_data", "split",
                        "condition"))
    by_path: dict[str, dict[str, str]] = {}
    for meta in sorted((root / "fake").glob(f"*/*/{META}")):
        folder = relative(root, meta.parent)
        header = True
        for n, line in numbered_lines(meta):
            where = f"{meta}:{n}"
            fields = line.split("|", len(META_FIELDS) - 1)  # the transcript may hold pipes
            if header:
                header = False
                if fields[0].strip().lower() == "path":
                    continue
            if len(fields) != len(META_FIELDS):
                out.skip(where, f"{len(fields)} fields, expected {len(META_FIELDS)} ({'|'.join(META_FIELDS)})")
                continue
            meta_row = dict(zip(META_FIELDS, (f.strip() for f in fields)))
            if not meta_row["model_name"] or not meta_row["architecture"]:
                out.skip(where, "empty model_name or architecture: no label to attribute")
                continue
            path = _clip_path(meta_row["path"], folder)
            row = {"clip_id": path.rsplit(".", 1)[0], "path": path, "architecture": meta_row["architecture"],
                   "checkpoint": meta_row["model_name"], "prompt_id": meta_row["original_file"] or path,
                   "text": meta_row["transcript"], "split": "", "condition": "",
                   **{k: meta_row[k] for k in out.columns if k in meta_row}}
            if path in by_path:
                out.skip(where, f"duplicate clip {path!r} (listed in another meta.csv line too)")
                continue
            by_path[path] = row
            out.rows.append((where, row))
    _read_lists(root, by_path, out)
    return out


def _read_lists(root: Path, by_path: dict[str, dict[str, str]], out: Scan) -> None:
    """The source-tracing lists: each row's split (train/dev/eval) from the main lists, its condition from
    the per-condition lists; a path no meta.csv lists, a model_name other than its meta.csv's, a clip in
    two splits, a condition-list clip in no main list: skipped with file and line."""
    lists = sorted((match["condition"] is not None, p.name, match["split"], match["condition"], p)  # main lists first
                   for folder in PROTOCOL_FOLDERS for p in (root / folder).glob("*.csv") if (match := LIST.match(p.name)))
    first_list: dict[str, str] = {}
    for _, _, split, condition, listing in lists:
        with open(listing, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                where = f"{listing}:{reader.line_num}"
                if not fields or (reader.line_num == 1 and fields[0].strip().lower() == "path"):
                    continue
                if len(fields) != 2:
                    out.skip(where, f"{len(fields)} fields, expected 2 (path,model_name)")
                    continue
                path, model = (_clip_path(fields[0].strip(), "fake"), fields[1].strip())
                row = by_path.get(path)
                if row is None:
                    out.skip(where, f"clip {path!r} is in no meta.csv (missing file?)")
                elif model != row["checkpoint"]:
                    out.skip(where, f"unknown system label {model!r}: the meta.csv says {row['checkpoint']!r}")
                elif condition is None:
                    if row["split"]:
                        out.skip(where, f"duplicate clip {path!r}: already in the {row['split']} list "
                                        f"({first_list[path]})")
                        continue
                    row["split"], first_list[path] = split, where
                elif not row["split"]:  # a condition list tags the main lists' clips, never adds one to a side
                    out.skip(where, f"clip {path!r} is in no main list (train.csv, dev.csv, eval.csv): "
                                    "a condition list only tags their clips")
                elif row["split"] != split:
                    out.skip(where, f"clip {path!r} is in the {row['split']} list, this condition list is {split}'s")
                else:
                    row["condition"] = "+".join(filter(None, (row["condition"], condition)))


FORMAT = DatasetFormat(
    name="mlaad", title="MLAAD (Multi-Language Audio Anti-Spoofing Dataset), v5 and later",
    download="https://deepfake-total.com/mlaad",
    root="the folder holding fake/<language>/<model>/ (and the source-tracing train/dev/eval.csv, or protocols/)",
    detect=detect, scan=scan)
