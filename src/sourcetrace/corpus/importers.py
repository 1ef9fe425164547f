"""Importers: a folder tree, a manifest-style CSV, a pipe-separated protocol list or a release ->
one corpus folder with copies (or hard links) of the audio."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath

from sourcetrace.core.audio import AUDIO_SUFFIXES, file_problem
from sourcetrace.core.naming import checkpoint_label, clip_location
from sourcetrace.corpus.columns import AUDIO_FACTS, IMPORTED_COLUMNS, REQUIRED_COLUMNS, ClipRecord, columns_of
from sourcetrace.corpus.manifest import (
    Corpus,
    ManifestError,
    audio_facts,
    audio_header_problem,
    claim_out,
    label_problems,
    outside_kind,
    place_file,
    placing,
    read_csv_rows,
    records,
)
from sourcetrace.corpus.release import import_release, is_release
from sourcetrace.corpus.sets.pathlist import list_rows


def import_corpus(src: str | Path, out: str | Path, link: str = "copy") -> Corpus:
    """Build a corpus in `out` from a folder tree, a manifest-style CSV, a pipe-separated protocol list,
    or a release that `corpus pack` wrote."""
    src = Path(src)
    if src.is_dir() and is_release(src):
        return import_release(src, out, link)
    if src.is_dir():
        (entries, columns), source = _entries_from_tree(src), src
    elif src.suffix.lower() == ".csv":
        (entries, columns), source = _entries_from_csv(src), src
    elif src.is_file():
        (entries, columns), source = _entries_from_protocol(src), src
    else:
        raise ManifestError(src, ["no such file or folder"])
    if not entries:
        raise ManifestError(source, ["no audio clips found"])
    out = Path(out)
    claim_out(out)
    problems: list[str] = []
    present = []
    destinations: dict[str, str] = {}
    audio_root = out.resolve() / "audio"
    for where, src_audio, row in entries:
        if not src_audio.is_file():
            problems.append(f"{where}: {file_problem(src_audio) or 'missing file'} {str(src_audio)!r}")
            continue
        unreadable = audio_header_problem(src_audio, None)
        if unreadable:
            problems.append(f"{where}: {str(src_audio)!r}: {unreadable}")
            continue
        inside = PurePosixPath(row.checkpoint, row.clip_id.replace("/", "__") + src_audio.suffix.lower()).as_posix()
        row = replace(row, path=f"audio/{inside}")
        if outside_kind(audio_root, inside):
            problems.append(f"{where}: checkpoint {row.checkpoint!r} or clip_id {row.clip_id!r} would put the "
                            f"audio at {row.path!r}, outside {out / 'audio'}; use names without '..' or a leading '/'")
        elif row.path in destinations:
            problems.append(f"{where}: clip would be written to {row.path!r}, as the clip at {destinations[row.path]}")
        destinations.setdefault(row.path, where)
        present.append((where, src_audio, row))
    # Validate labels and destinations before touching the disk, with the source's own line numbers:
    # a refused input leaves nothing behind.
    problems += label_problems([(where, row) for where, _, row in present])
    if problems:
        raise ManifestError(source, problems)
    with placing(out) as placed:  # a failed copy (disk full, Ctrl-C) leaves no half corpus behind
        rows = []
        for _, src_audio, row in present:
            place_file(src_audio, out / row.path, link)
            placed.append(out / row.path)
            rows.append(replace(row, **audio_facts(out / row.path)))
        corpus = Corpus(root=out, rows=rows, columns=columns)
        corpus.write()
    return corpus


Entries = list[tuple[str, Path, ClipRecord]]  # (where in the source, audio file, its record without a path yet)


def _entries_from_tree(src: Path) -> tuple[Entries, list[str]]:
    """`<architecture>/<checkpoint>/*.wav`; optional transcript `<stem>.txt` beside each clip."""
    entries = []
    for audio in sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir()):
        rel = audio.relative_to(src)
        if len(rel.parts) != 3:
            raise ManifestError(audio, [f"expected <architecture>/<checkpoint>/<clip> under {src}, got {rel.as_posix()!r}"])
        arch, ckpt_dir, _ = rel.parts
        transcript = audio.with_suffix(".txt")
        text = transcript.read_text(encoding="utf-8").strip() if transcript.is_file() else ""
        checkpoint = checkpoint_label(arch, ckpt_dir)
        entries.append((rel.as_posix(), audio, ClipRecord(
            clip_id=clip_location(checkpoint, audio.stem)[0], path="", architecture=arch, checkpoint=checkpoint,
            prompt_id=audio.stem, text=text)))
    return entries, [*REQUIRED_COLUMNS, *AUDIO_FACTS]


def _entries_from_csv(src: Path) -> tuple[Entries, list[str]]:
    """A CSV with the manifest columns; paths relative to the CSV. `path`, `architecture` and
    `checkpoint` are required; clip_id defaults to `<checkpoint>/<stem>`, prompt_id to the stem.
    The manifest gets the CSV's columns (unknown ones kept) and every column an import writes."""
    columns, located = read_csv_rows(src)
    missing = [c for c in ("path", "architecture", "checkpoint") if c not in columns]
    if missing:
        raise ManifestError(src, [f"header lacks required column(s): {', '.join(missing)}"])
    entries, rows = [], []
    for n, raw in located:
        row = {k: v.strip() for k, v in raw.items()}
        rel = row["path"]
        if not rel:
            raise ManifestError(src, [f"line {n}: empty path"])
        if outside_kind(src.parent, rel) == "escapes":
            raise ManifestError(src, [f"line {n}: path {rel!r} escapes the folder of the CSV"])
        audio = src.parent / rel
        stem = PurePosixPath(rel).stem
        row.setdefault("prompt_id", "")
        row["prompt_id"] = row["prompt_id"] or stem
        row["clip_id"] = row.get("clip_id") or f"{row['checkpoint']}/{stem}"
        row.setdefault("text", "")
        rows.append(row)
        entries.append((f"line {n}", audio, row))
    # the audio facts the CSV may give are measured again on import: only the others are read
    typed = records(src, [(where, {k: v for k, v in row.items() if k not in AUDIO_FACTS}) for where, _, row in entries])
    return ([(where, audio, record) for (where, audio, _), record in zip(entries, typed)],
            columns_of(rows + [dict.fromkeys(IMPORTED_COLUMNS)]))


def _entries_from_protocol(src: Path) -> tuple[Entries, list[str]]:
    """A `path|speaker|system` list (sourcetrace.corpus.sets.pathlist): every bad line refused at once."""
    entries, problems = [], []
    for n, problem, row in list_rows(src):
        if problem:
            problems.append(f"line {n}: {problem}")
        else:
            entries.append((f"line {n}", src.parent / row["path"], ClipRecord.from_row({**row, "path": ""})))
    if problems:
        raise ManifestError(src, problems)
    return entries, [*REQUIRED_COLUMNS, "speaker", *AUDIO_FACTS]
