"""The corpus contract: a folder with `manifest.csv` and the audio files it lists.

Every stage after synthesis reads corpora through `Corpus.read`, so every later number rests on
the checks made here: unique clip ids, paths inside the folder, files present, non-empty labels,
and a checkpoint name that belongs to exactly one architecture.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath

import soundfile as sf

from sourcetrace.core.audio import file_problem
from sourcetrace.core.errors import NothingWritten, SourcetraceError
from sourcetrace.core.fileio import NO_SPACE, copy_file_atomic, sha256_file, write_text_atomic
from sourcetrace.corpus.columns import COLUMNS, NON_EMPTY_COLUMNS, REQUIRED_COLUMNS, ClipRecord, row_problems

MANIFEST = "manifest.csv"
# Beside the manifest of an in-place corpus: the read-only dataset root its paths are relative to.
IN_PLACE = "dataset-root.json"
MISSING_FILE = "missing file"


class ManifestError(SourcetraceError, ValueError):
    """Raised with every problem found, each naming the file and row."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.source = str(source)
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: {len(problems)} problem(s):\n  {shown}{more}")


@dataclass
class Corpus:
    root: Path
    rows: list[ClipRecord]
    columns: list[str] = field(default_factory=lambda: list(REQUIRED_COLUMNS))  # the manifest's, in its order
    manifest_name: str = MANIFEST  # relative to root; a generator's partial manifests live elsewhere
    lines: list[int] = field(default_factory=list)  # the physical line each row starts on (quoted newlines)
    # An in-place corpus (`corpus import --in-place`): the dataset root its paths are relative to,
    # read from IN_PLACE; None for a corpus whose audio lies in its own folder.
    audio_root: Path | None = None

    @property
    def manifest_path(self) -> Path:
        return self.root / self.manifest_name

    @property
    def audio_base(self) -> Path:
        """The folder every `path` is relative to (and may not leave)."""
        return self.audio_root if self.audio_root is not None else self.root

    def audio_path(self, row: ClipRecord) -> Path:
        return self.audio_base / row.path

    def column(self, name: str) -> list[str]:
        """Every clip's value of `name` as the manifest spells it."""
        return [row.cell(name) for row in self.rows]

    def where(self, index: int) -> str:
        """Where row `index` is: its line in the manifest, or its position for rows not yet written."""
        return f"line {self.lines[index]}" if index < len(self.lines) else f"row {index + 1} (not yet written)"

    @classmethod
    def read(cls, root: str | Path, require_files: bool = True, manifest_name: str = MANIFEST,
             allow_empty: bool = False) -> Corpus:
        """Read and validate manifest.csv. `require_files=False` tolerates listed files that are
        absent, `allow_empty` a manifest without rows (a writer resuming its own interrupted
        corpus); every other check still applies."""
        root = Path(root)
        manifest = root / manifest_name
        if not manifest.is_file():
            raise ManifestError(manifest, ["no manifest.csv: is this a corpus folder? Build one with `sourcetrace corpus import`."])
        columns, located = read_csv_rows(manifest)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ManifestError(manifest, [f"header lacks required column(s): {', '.join(missing)}"])
        if not located and not allow_empty:
            raise ManifestError(manifest, ["no clips: the manifest has a header but no rows"])
        corpus = cls(root=root, rows=records(manifest, [(f"line {line}", row) for line, row in located]),
                     columns=columns, manifest_name=manifest_name, lines=[line for line, _ in located],
                     audio_root=read_audio_root(root))
        corpus.validate(source=manifest, require_files=require_files)
        return corpus

    def validate(self, source: str | Path | None = None, require_files: bool = True) -> None:
        """Check the contract; raise ManifestError listing every problem with its line number."""
        source = source or self.manifest_path
        located = [(self.where(i), row) for i, row in enumerate(self.rows)]
        problems = label_problems(located)
        if self.audio_root is not None:  # an in-place corpus: one listing per folder of the dataset root
            problems += self._in_place_problems(located, require_files)
            if problems:
                raise ManifestError(source, problems)
            return
        root = self.root.resolve()
        audio_of: dict[Path, str] = {}
        for where, row in located:
            problem = _path_problem(root, row.path, require_files) if row.path else None
            if problem:
                problems.append(f"{where}: {problem}")
            elif row.path:
                # one audio file under two rows could sit on both sides of a split
                first = audio_of.setdefault((root / row.path).resolve(), where)
                if first != where:
                    problems.append(f"{where}: path {row.path!r} is the audio file of the row at {first} too; "
                                    "each row needs its own file")
        if problems:
            raise ManifestError(source, problems)

    def _in_place_problems(self, located: list[tuple[str, ClipRecord]], require_files: bool) -> list[str]:
        """Paths outside the dataset root, missing files, and two rows with one file."""
        problems = []
        first: dict[str, str] = {}
        for (where, row), problem in zip(located, tree_problems(self.audio_base, [row.path for _, row in located])):
            if problem and (require_files or not problem.startswith(MISSING_FILE)):
                problems.append(f"{where}: {problem}")
            elif first.setdefault(row.path, where) != where:
                problems.append(f"{where}: path {row.path!r} is the audio file of the row at {first[row.path]} too; "
                                "each row needs its own file")
        return problems

    def write(self) -> None:
        """Validate, then write manifest.csv atomically: required columns first, then `columns`, then
        any other column a row holds a value of (table order, then the rows' unknown columns)."""
        self.validate(source=self.manifest_path)
        extra = [c for c in self.columns if c not in REQUIRED_COLUMNS]
        extra += [c for c in COLUMNS if c not in REQUIRED_COLUMNS and c not in extra
                  and any(row.cell(c) for row in self.rows)]
        for row in self.rows:
            extra.extend(c for c in row.extra if c not in extra)
        columns = list(REQUIRED_COLUMNS) + extra
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        lines, line = [], 2
        for row in self.rows:
            values = [row.cell(c) for c in columns]
            writer.writerow(values)
            lines.append(line)
            line += 1 + sum(len(_LINE_BREAK.findall(v)) for v in values)
        self.columns, self.lines = columns, lines
        text = buf.getvalue()
        if self.manifest_path.is_file() and self.manifest_path.read_text(encoding="utf-8") == text:
            return  # unchanged: keep the file (and its mtime) as it is
        write_text_atomic(self.manifest_path, text)


def outside_kind(root: Path, rel: str) -> str | None:
    """Why `rel` is not a relative path inside `root` (resolved, so links count), or None."""
    if os.path.isabs(rel) or PurePosixPath(rel).is_absolute():
        return "is absolute"
    try:
        full = (root / rel).resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
        return "loops"
    if full != root and root.resolve() not in full.parents:
        return "escapes"
    return None


def read_audio_root(corpus_root: Path) -> Path | None:
    """The dataset root an in-place corpus references (IN_PLACE beside its manifest), or None."""
    marker = corpus_root / IN_PLACE
    if not marker.is_file():
        return None
    try:
        root = Path(json.loads(marker.read_text(encoding="utf-8"))["root"])
    except (ValueError, KeyError, TypeError):
        raise ManifestError(marker, ["not the JSON object {\"root\": DATASET_ROOT} that `corpus import --in-place` "
                                     "writes; import the dataset again"]) from None
    if not root.is_dir():
        raise ManifestError(marker, [f"the dataset root {str(root)!r} of this in-place corpus is not a folder "
                                     "(moved or unmounted?)"])
    return root


def claim_out(out: Path) -> None:
    """Make `out` ready for a new corpus: a ManifestError if it holds one; a dataset-root marker without
    a manifest beside it (an in-place import killed before its manifest, or whose manifest was
    removed) names no corpus and is removed, so the new manifest's paths are never read against it."""
    if (out / MANIFEST).exists():
        raise ManifestError(out / MANIFEST, ["already exists; choose an empty --out folder"])
    (out / IN_PLACE).unlink(missing_ok=True)


def tree_problems(root: Path, rels: Sequence[str]) -> list[str | None]:
    """Why each of `rels` is not a regular file inside `root` (None where it is), reading one listing
    per folder instead of stat-ing every file: 700,000 rows of a dataset on shared storage cost
    seconds. Absolute paths, `..`, a folder or a file that is a symlink leading out are refused."""
    root = root.resolve()
    listings: dict[str, dict[str, os.DirEntry] | str] = {}
    out: list[str | None] = []
    for rel in rels:
        parts = rel.split("/")
        if os.path.isabs(rel):
            out.append(f"path {rel!r} is absolute; paths must be relative to the dataset root")
            continue
        if ".." in parts or "" in parts or "\\" in rel:
            out.append(f"path {rel!r} escapes the dataset root (or is not a plain relative path)")
            continue
        folder, name = "/".join(parts[:-1]), parts[-1]
        listing = listings.get(folder)
        if listing is None:
            listing = listings[folder] = _listing(root, folder)
        if isinstance(listing, str):
            out.append(listing)
            continue
        entry = listing.get(name)
        if entry is None:
            out.append(f"{MISSING_FILE} {rel!r}")
        elif entry.is_symlink():
            out.append(_link_problem(root, rel))
        elif not entry.is_file(follow_symlinks=False):
            out.append(f"{rel!r} is not a regular file")
        else:
            out.append(None)
    return out


def _listing(root: Path, folder: str) -> dict[str, os.DirEntry] | str:
    """The entries of `root/folder` by name, or why it cannot be listed (a link out, absent)."""
    where = root / folder
    try:
        resolved = where.resolve()
    except (RuntimeError, OSError):
        return f"folder {folder!r} is a symlink loop (or cannot be resolved)"
    if resolved != root and root not in resolved.parents:
        return f"folder {folder!r} escapes the dataset root (a symlink to {str(resolved)!r})"
    try:
        with os.scandir(where) as it:
            return {entry.name: entry for entry in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        return f"folder {folder!r} cannot be listed ({exc.strerror})"


def _link_problem(root: Path, rel: str) -> str | None:
    """A file that is a symlink: fine if it resolves to a regular file inside `root`."""
    kind = outside_kind(root, rel)
    if kind == "loops":
        return f"path {rel!r} is a symlink loop (or cannot be resolved)"
    if kind:
        return f"path {rel!r} is a symlink out of the dataset root (to {str((root / rel).resolve())!r})"
    return None if (root / rel).is_file() else f"{rel!r} is a symlink to a missing or irregular file"


def outside_problem(root: Path, rel: str) -> str | None:
    """Why `rel` may not be read as a file of the folder `root` (absolute, escaping, a loop), or None."""
    outside = outside_kind(root, rel)
    if outside == "is absolute":
        return f"path {rel!r} is absolute; paths must be relative to the corpus folder"
    if outside == "loops":
        return f"path {rel!r} is a symlink loop (or cannot be resolved)"
    if outside:
        return f"path {rel!r} escapes the corpus folder"
    return None


def _path_problem(root: Path, rel: str, require_file: bool = True) -> str | None:
    problem = outside_problem(root, rel)
    if problem is None and require_file and not (root / rel).is_file():
        return f"{file_problem(root / rel) or 'missing file'} {rel!r}"
    return problem


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the csv module counts as a new physical line


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and rows of a UTF-8 CSV (a BOM is fine), each row with the physical line it starts
    on, so a quoted newline in `text` never shifts the line numbers of later messages."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
                if not header:
                    raise ManifestError(path, ["empty file: no header row"])
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:
                    raise ManifestError(path, [f"header repeats column(s) {', '.join(map(repr, repeated))}: "
                                               "each column must appear once"])
                rows, problems, start = [], [], reader.line_num + 1
                for fields in reader:
                    if fields:  # blank lines are skipped, as csv.DictReader does
                        if len(fields) > len(header):
                            problems.append(f"line {start}: {len(fields)} fields, the header has {len(header)}")
                        rows.append((start, dict(zip(header, fields + [""] * (len(header) - len(fields))))))
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise ManifestError(path, [f"line {reader.line_num}: not valid CSV ({exc})"]) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(path, [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if problems:
        raise ManifestError(path, problems)
    return header, rows


def records(source: str | Path, located_rows: list[tuple[str, dict[str, str]]]) -> list[ClipRecord]:
    """The typed records of CSV rows; ManifestError naming `source`, the place and column of every
    value that is not its column's one spelling."""
    problems = [f"{where}: {problem}" for where, row in located_rows for problem in row_problems(row)]
    if problems:
        raise ManifestError(source, problems)
    return [ClipRecord.from_row(row) for _, row in located_rows]


def corpus_identity(corpus: Corpus, audio_hashes: dict[str, str]) -> dict:
    """The manifest's bytes and every clip's audio hash: a different corpus never shares this sha256."""
    digest = hashlib.sha256(corpus.manifest_path.read_bytes())
    for clip_id in sorted(audio_hashes):
        digest.update(f"{clip_id}\t{audio_hashes[clip_id]}\n".encode())
    return {"path": str(corpus.root), "sha256": digest.hexdigest(), "n_clips": len(corpus.rows)}


def audio_facts(path: Path) -> dict[str, object]:
    """The manifest's provenance columns for one audio file (columns.AUDIO_FACTS): sha256, sample
    rate, duration, as ClipRecord types them."""
    facts: dict[str, object] = {"sha256": sha256_file(path)}
    try:
        info = sf.info(str(path))
        facts.update(sample_rate=info.samplerate, duration_s=Decimal(f"{info.frames / info.samplerate:.3f}"))
    except Exception:  # noqa: BLE001 - unreadable audio is reported by `verify`/feature extraction
        pass
    return facts


def audio_header_problem(path: Path, row: ClipRecord | None) -> str | None:
    """The cheap decode check (header only): audio that libsndfile reads, not empty, and of the
    manifest's duration and sample rate where the row records them. None when it holds."""
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - libsndfile raises several types; all mean "cannot decode"
        return "audio cannot be decoded"
    if info.frames <= 0 or info.samplerate <= 0:
        return "audio holds no samples"
    duration = f"{info.frames / info.samplerate:.3f}"
    if row is None:
        return None
    if row.duration_s is not None and abs(row.duration_s - Decimal(duration)) > Decimal("0.002"):
        return f"{duration} s of audio, manifest says {row.duration_s} s (truncated?)"
    if row.sample_rate is not None and row.sample_rate != info.samplerate:
        return f"sample rate {info.samplerate}, manifest says {row.sample_rate}"
    return None


def verify_corpus(corpus: Corpus) -> list[str]:
    """Re-hash and re-read every clip: a changed, truncated or undecodable file is a problem."""
    problems = []
    for i, row in enumerate(corpus.rows):
        path = corpus.audio_path(row)
        where = f"{corpus.where(i)} ({row.path})"
        if not path.is_file():
            problems.append(f"{where}: {file_problem(path) or 'missing file'}")
            continue
        if not row.sha256:
            problems.append(f"{where}: no sha256 recorded, cannot verify"
                            + (" (an in-place import: `sourcetrace corpus hash` records them)" if corpus.audio_root else ""))
        elif sha256_file(path) != row.sha256:
            problems.append(f"{where}: sha256 differs from the manifest (file changed or corrupted)")
        problem = audio_header_problem(path, row)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        try:
            sf.read(str(path), dtype="float32")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: audio cannot be decoded ({type(exc).__name__})")
    return problems


def label_problems(located_rows: list[tuple[str, ClipRecord]]) -> list[str]:
    """Empty labels, duplicate clip ids, and a checkpoint name shared by two architectures."""
    problems: list[str] = []
    first_seen: dict[str, str] = {}
    owner: dict[str, tuple[str, str]] = {}
    for where, row in located_rows:
        for col in NON_EMPTY_COLUMNS:
            if not getattr(row, col).strip():
                problems.append(f"{where}: empty {col}")
        clip_id = row.clip_id
        if clip_id and clip_id in first_seen:
            problems.append(f"{where}: duplicate clip_id {clip_id!r} (first at {first_seen[clip_id]})")
        first_seen.setdefault(clip_id, where)
        arch, ckpt = row.architecture, row.checkpoint
        if arch and ckpt:
            prev_arch, prev_where = owner.setdefault(ckpt, (arch, where))
            if prev_arch != arch:
                problems.append(
                    f"{where}: checkpoint {ckpt!r} belongs to architecture {arch!r} here but to {prev_arch!r} "
                    f"at {prev_where}; checkpoint names must be unique across architectures"
                )
    return problems


@contextlib.contextmanager
def placing(out: Path) -> Iterator[list[Path]]:
    """Yield the list a writer appends each audio file it places under `out` to: if the block fails
    (a failed copy, a full disk, Ctrl-C), they and every folder it created are removed, and a full
    disk becomes NothingWritten naming `out`."""
    first_new = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # topmost folder we create
    placed: list[Path] = []
    try:
        yield placed
    except BaseException as exc:
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        for path in placed:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise NothingWritten.from_os_error(exc, out, out) from exc
        raise


def place_file(src: Path, dest: Path, link: str) -> None:
    """`dest` becomes a copy of `src` (atomically), or a hard link where `link` is "hardlink" and one can be made."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link == "hardlink":
        try:
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dest)
            return
        except OSError:
            pass  # another filesystem: fall back to a copy
    copy_file_atomic(src, dest)


def label_values(corpus: Corpus, level: str) -> list[str]:
    """Labels of every clip at `level` (a manifest column such as checkpoint or architecture)."""
    if level not in corpus.columns and not any(r.cell(level) for r in corpus.rows):
        raise ManifestError(corpus.manifest_path, [f"no column {level!r} to use as label level"])
    values = corpus.column(level)
    empty = [corpus.where(i) for i, v in enumerate(values) if not v]
    if empty:
        raise ManifestError(corpus.manifest_path, [f"{where}: empty {level}" for where in empty])
    return values
