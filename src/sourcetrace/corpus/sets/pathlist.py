"""`path|speaker|system` lists (TADA's and the first MLAAD source-tracing protocols): one clip a
line, its path relative to the list's folder; an optional header line starting with `path|`.
The system is both architecture and checkpoint label. DATASET_ROOT is the list file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sourcetrace.corpus.sets.base import DatasetFormat, Scan, numbered_lines


def list_rows(src: Path) -> Iterator[tuple[int, str | None, dict[str, str]]]:
    """(line, why it is bad or None, manifest row) of every line of the list."""
    for n, line in numbered_lines(src):
        if n == 1 and line.lower().startswith("path|"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3:
            yield n, (f"{len(fields)} field(s), expected 3: path|speaker|system (the audio file relative to the "
                      "list's folder, its speaker, the system that made it); a line with more fields is refused, "
                      "not cut to three"), {}
            continue
        rel, speaker, system = fields
        if not rel or not system:
            yield n, f"empty {'path' if not rel else 'system'}", {}
        elif os.path.isabs(rel) or ".." in PurePosixPath(rel).parts:
            yield n, f"path {rel!r} must be relative and stay inside {src.parent}", {}
        else:
            stem = PurePosixPath(rel).stem
            yield n, None, {"clip_id": f"{system}/{stem}", "path": rel, "architecture": system, "checkpoint": system,
                            "prompt_id": stem, "text": "", "speaker": speaker}


def scan(src: Path) -> Scan:
    out = Scan(columns=("speaker",))
    for n, problem, row in list_rows(src):
        if problem:
            out.skip(f"{src}:{n}", problem)
        else:
            out.rows.append((f"{src}:{n}", row))
    return out


FORMAT = DatasetFormat(
    name="path-speaker-system", title="a path|speaker|system list (TADA's protocol files)", download="",
    root="a list file of path|speaker|system lines (paths relative to its folder)",
    detect=lambda src: src.is_file() and src.suffix.lower() == ".txt", scan=scan, dataset_root=lambda src: src.parent,
    takes_file=True)
