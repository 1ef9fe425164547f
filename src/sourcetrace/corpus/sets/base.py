"""The interface every reader of a public source-tracing set implements, and what readers share.

A reader turns a dataset root, as the set is distributed, into manifest rows whose paths are
relative to that root, plus every line it skipped with the file and line and why. It reads
protocol and metadata files only, never audio: `corpus.datasets.import_dataset` then checks the
files (one listing per folder), and writes the corpus in place or with copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sourcetrace.core.errors import UsageError

BONAFIDE = "bonafide"  # the label of real speech, at every level, in every set that ships it
SPOOF = "spoof"
KEYS = (BONAFIDE, SPOOF)


@dataclass
class Scan:
    """What a reader found: rows (where, manifest row), skipped lines ("file:line: why": bad input, the
    import exits non-zero) and parts of the set left out by design ("folder: why": reported, not errors)."""

    columns: tuple[str, ...]  # the set's manifest columns beyond the required ones, in order
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        self.skipped.append(f"{where}: {why}")

    def leave_out(self, where: str, why: str) -> None:
        self.left_out.append(f"{where}: {why}")


@dataclass(frozen=True)
class DatasetFormat:
    """One set's reader: `--format NAME`, its official download page, how to recognise its root."""

    name: str
    title: str
    download: str                        # the official page (sourcetrace ships none of the audio)
    root: str                            # what DATASET_ROOT is, for messages and the README
    detect: Callable[[Path], bool]       # True only where the layout is this set's and no other's
    scan: Callable[[Path], Scan]         # DATASET_ROOT -> rows with paths relative to dataset_root(DATASET_ROOT)
    dataset_root: Callable[[Path], Path] = lambda source: source  # the folder the paths are relative to
    takes_file: bool = False             # DATASET_ROOT is a file (a list), not a folder


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 protocol file; blank lines left out."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); is this the set's protocol file?") \
            from None


def protocol_fields(path: Path, count: int, spelled: str, out: Scan) -> Iterator[tuple[str, list[str]]]:
    """("file:line", fields) of each whitespace-separated line of `path` with `count` fields; every
    other line, or the whole file if it is absent, is skipped into `out`."""
    if not path.is_file():
        out.skip(str(path), "no such protocol file: its clips are not imported")
        return
    for n, line in numbered_lines(path):
        fields = line.split()
        if len(fields) != count:
            out.skip(f"{path}:{n}", f"{len(fields)} fields, expected {count} ({spelled})")
        else:
            yield f"{path}:{n}", fields


def relative(root: Path, path: Path) -> str:
    """`path` relative to `root`, with forward slashes: a manifest path."""
    return path.relative_to(root).as_posix()
