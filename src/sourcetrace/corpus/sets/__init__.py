"""Readers of the public source-tracing sets as distributed, one module each, and their registry.

`FORMATS` maps each `--format` name to its reader (sourcetrace.corpus.sets.base.DatasetFormat);
`detect_format` names the one whose layout a dataset root has.
"""

from __future__ import annotations

from pathlib import Path

from sourcetrace.core.errors import UsageError
from sourcetrace.corpus.sets import add2023, asvspoof5, asvspoof2019, mlaad, pathlist, wavefake
from sourcetrace.corpus.sets.base import DatasetFormat

FORMATS: dict[str, DatasetFormat] = {m.FORMAT.name: m.FORMAT
                                     for m in (asvspoof2019, asvspoof5, mlaad, add2023, wavefake, pathlist)}
LIST_FORMAT = pathlist.FORMAT  # the one reader of a file rather than a dataset root


def get_format(name: str) -> DatasetFormat:
    if name not in FORMATS:
        raise UsageError(f"--format {name!r}: unknown; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def detect_format(source: Path) -> DatasetFormat:
    """The one set whose layout `source` has; a UsageError when none or several do."""
    found = [f for f in FORMATS.values() if f.detect(source)]
    if len(found) != 1:
        which = "no known dataset layout" if not found else f"the layouts of {', '.join(f.name for f in found)}"
        if source.is_file():
            raise UsageError(f"{source}: a file in {which}; {LIST_FORMAT.root} is read with "
                             f"--format {LIST_FORMAT.name}, a set's dataset root is a folder")
        raise UsageError(f"{source}: {which}; name it with --format ({' | '.join(FORMATS)})")
    return found[0]


__all__ = ["FORMATS", "LIST_FORMAT", "DatasetFormat", "detect_format", "get_format"]
