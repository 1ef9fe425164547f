"""`corpus import DATASET_ROOT --format NAME`: a public source-tracing set, as distributed, as a corpus.

The set's reader (sourcetrace.corpus.sets) reads its protocol and metadata files, never its audio.
Every row is checked before anything is written: a bad line (wrong column count, unknown system
label), a duplicate clip id, a checkpoint under two architectures, a missing file or a path that
leaves the dataset root is reported with its file and line and skipped; the good rows are kept.

In place (`--in-place`), the corpus is a manifest whose paths are relative to the read-only
dataset root, named in `dataset-root.json` beside it: no audio is copied or linked, and no audio is
read, so a 700,000-row protocol imports in seconds (perf/bench_import.py). The audio's sha256 is
computed once, lazily: by the feature store on first extraction (cached under its stat signature;
a changed file is re-hashed) whose hashes enter the corpus identity of every result, or by
`corpus hash`, a streaming pass that records sha256, sample rate and duration in the manifest.
Without `--in-place` the audio is copied (or hard linked) under the corpus's `audio/`, as
`corpus import` does for its other sources, and its facts measured on the way.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from tqdm import tqdm

from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import write_json_atomic, write_text_atomic
from sourcetrace.corpus.columns import AUDIO_FACTS, NON_EMPTY_COLUMNS, REQUIRED_COLUMNS, spell
from sourcetrace.corpus.manifest import (
    IN_PLACE,
    MANIFEST,
    Corpus,
    ManifestError,
    audio_facts,
    claim_out,
    place_file,
    placing,
    tree_problems,
)
from sourcetrace.corpus.release import is_release
from sourcetrace.corpus.sets import FORMATS, LIST_FORMAT, DatasetFormat, detect_format, get_format

SKIPPED = "import-skipped.txt"  # beside the manifest: every skipped line of the last import
HASH_PROGRESS = "hash-progress.tsv"  # beside the manifest while `corpus hash` runs: path and facts, a line a clip
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class DatasetImport:
    format: str
    manifest: Path
    clips: int
    skipped: list[str] = field(default_factory=list)  # "file:line: why", in the order found
    left_out: list[str] = field(default_factory=list)  # "folder: why": parts of the set no reader label fits


def dataset_layout(source: str | Path) -> str | None:
    """The set whose layout the folder `source` has, where exactly one does (auto-detection); None for
    files, releases and folders no reader (or several) recognises: `corpus import` reads those itself."""
    source = Path(source)
    if not source.is_dir() or is_release(source):
        return None
    found = [f.name for f in FORMATS.values() if f.detect(source)]
    return found[0] if len(found) == 1 else None


def import_dataset(source: str | Path, out: str | Path, format: str | None = None, in_place: bool = False,
                   link: str = "copy") -> DatasetImport:
    """Import the set at `source` (its reader named by `format`, else detected) into the corpus `out`."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise UsageError(f"{source}: no such dataset root")
    reader: DatasetFormat = get_format(format) if format else detect_format(source)
    if source.is_dir() == reader.takes_file:
        raise UsageError(f"{source}: --format {reader.name} reads {reader.root}, not a "
                         f"{'folder' if source.is_dir() else 'file'}" + (
                             f"; a dataset root is read with --format {' | '.join(n for n in FORMATS if n != reader.name)}"
                             if reader.takes_file else f"; {LIST_FORMAT.root} is read with --format {LIST_FORMAT.name}"))
    claim_out(out)
    root = reader.dataset_root(source).resolve()
    scan = reader.scan(source)
    skipped = list(scan.skipped)
    rows = _good_rows(root, scan.rows, skipped)
    if not rows:
        raise ManifestError(source, [f"no clips to import ({len(skipped)} line(s) skipped)", *skipped])
    columns = [*REQUIRED_COLUMNS, *(c for c in scan.columns if c not in REQUIRED_COLUMNS)]
    if in_place:  # the marker first: a manifest is never read without the root its paths are relative to
        write_json_atomic(out / IN_PLACE, {"root": str(root), "format": reader.name})
        _write(out, columns, rows)
    else:
        _copy(root, out, columns, rows, link)
    if skipped:
        write_text_atomic(out / SKIPPED, "".join(f"{line}\n" for line in skipped))
    else:
        (out / SKIPPED).unlink(missing_ok=True)
    return DatasetImport(reader.name, out / MANIFEST, len(rows), skipped, list(scan.left_out))


def _good_rows(root: Path, rows: list[tuple[str, dict[str, str]]], skipped: list[str]) -> list[dict[str, str]]:
    """The rows that pass every check, in order; each other one added to `skipped` with its place."""
    first_id: dict[str, str] = {}
    owner: dict[str, tuple[str, str]] = {}
    problems = tree_problems(root, [row["path"] for _, row in rows])
    good = []
    for (where, row), problem in zip(rows, problems):
        empty = [c for c in NON_EMPTY_COLUMNS if not row[c].strip()]
        arch, prev = row["architecture"], owner.get(row["checkpoint"])
        if empty:
            skipped.append(f"{where}: empty {', '.join(empty)}")
        elif row["clip_id"] in first_id:
            skipped.append(f"{where}: duplicate clip id {row['clip_id']!r} (first at {first_id[row['clip_id']]})")
        elif problem:
            skipped.append(f"{where}: {problem}")
        elif prev is not None and prev[0] != arch:
            skipped.append(f"{where}: system {row['checkpoint']!r} of architecture {arch!r} here, {prev[0]!r} at {prev[1]}")
        else:
            first_id[row["clip_id"]] = where
            owner.setdefault(row["checkpoint"], (arch, where))
            good.append(row)
    return good


def _write(out: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """manifest.csv, atomically, straight from the rows: no per-row record objects at 700,000 rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row.get(c, "") for c in columns] for row in rows)
    write_text_atomic(out / MANIFEST, buf.getvalue())


def _copy(root: Path, out: Path, columns: list[str], rows: list[dict[str, str]], link: str) -> None:
    """Copies (or hard links) of the audio under `out/audio/`, its facts measured; nothing left on failure."""
    with placing(out) as placed:
        copied = []
        for row in tqdm(rows, unit="clip", desc="import", disable=len(rows) < 1000):
            dest = out / "audio" / row["path"]
            place_file(root / row["path"], dest, link)
            placed.append(dest)
            facts = {k: spell(v) for k, v in audio_facts(dest).items()}
            copied.append({**row, "path": f"audio/{row['path']}", **facts})
        _write(out, [*columns, *AUDIO_FACTS], copied)


def record_audio_facts(corpus_dir: str | Path, progress: bool = True) -> tuple[int, list[str]]:
    """`corpus hash`: sha256, sample rate and duration of every clip that lacks them, in one streaming
    pass, recorded in the manifest (so `corpus verify` can check the dataset root later). Each clip's
    facts are appended to HASH_PROGRESS as it is hashed, so an interrupted pass loses at most one clip:
    a rerun takes them from there and hashes only the rest (rewriting a 700,000-row manifest as a
    checkpoint costs half a minute; a line costs nothing). Returns (clips recorded, problems); a clip
    that cannot be read or decoded is reported with its path and keeps its empty facts (a rerun tries
    it again)."""
    corpus = Corpus.read(corpus_dir)
    side = corpus.root / HASH_PROGRESS
    resumed = _resume(corpus, side)
    todo = [i for i, row in enumerate(corpus.rows) if not row.sha256]
    problems: list[str] = []
    with open(side, "a", encoding="utf-8") as log:
        for i in tqdm(todo, unit="clip", desc="hash", disable=not progress or not todo):
            row, path = corpus.rows[i], corpus.audio_path(corpus.rows[i])
            try:
                facts = audio_facts(path)
            except OSError as exc:
                problems.append(f"{corpus.where(i)} ({path}): cannot be read ({exc.strerror or exc})")
                continue
            if "sample_rate" not in facts:
                problems.append(f"{corpus.where(i)} ({path}): audio cannot be decoded")
                continue
            corpus.rows[i] = replace(row, **facts)
            log.write("\t".join([row.path, *(spell(facts[k]) for k in AUDIO_FACTS)]) + "\n")
            log.flush()
    if todo or resumed:
        corpus.write()
    side.unlink()
    return resumed + len(todo) - len(problems), problems


def _resume(corpus: Corpus, side: Path) -> int:
    """The facts an interrupted `corpus hash` appended to `side`, put into the rows still without them;
    a torn last line, or one for a path the manifest does not hold, is left out (hashed again)."""
    if not side.is_file():
        return 0
    text = side.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):  # killed mid-line: the next line starts on its own
        with open(side, "a", encoding="utf-8") as log:
            log.write("\n")
    index = {row.path: i for i, row in enumerate(corpus.rows)}
    resumed = 0
    for line in text.splitlines():
        path, *facts = line.split("\t")
        i = index.get(path)
        if i is None or corpus.rows[i].sha256 or len(facts) != 3 or not SHA256.fullmatch(facts[0]):
            continue
        try:
            rate, duration = int(facts[1]), Decimal(facts[2])
        except (ValueError, ArithmeticError):
            continue
        corpus.rows[i] = replace(corpus.rows[i], sha256=facts[0], sample_rate=rate, duration_s=duration)
        resumed += 1
    return resumed
