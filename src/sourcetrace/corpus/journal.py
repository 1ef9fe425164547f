"""Synthesis journals: `parts/<job>.jsonl` in a corpus folder, one JSON line per finished clip.

They are how `synth --recipe` resumes after a kill and what a release card hashes; the writer is
`pipeline.regenerate`, the readers are it and `corpus.release`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PARTS = "parts"  # the journals' folder inside a corpus


def read_journal(path: Path) -> dict[str, dict]:
    """clip_id -> row of every complete line (a torn last line from a kill is ignored)."""
    rows = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            row = json.loads(line)
        except ValueError:
            break
        rows[row["clip_id"]] = row
    return rows


def append_journal(path: Path, row: dict) -> None:
    """One line per finished clip, synced: after a kill the journal holds every clip it names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
