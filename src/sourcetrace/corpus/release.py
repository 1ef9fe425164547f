"""Corpus releases: a corpus as a Hugging Face `datasets` audio folder, with a dataset card.

`datasets.load_dataset(DIR)` loads a release as it is (AudioFolder: audio files plus a metadata
file), and `sourcetrace corpus import DIR` gives back the corpus, with the same identity (the
corpus sha256 of results files). Layout of a release:

    README.md       the dataset card: the YAML header the Hub reads, and provenance from the manifest
    metadata.jsonl  one line per clip: `file_name` (= the manifest's `path`) and every manifest column
    manifest.csv    the corpus manifest, byte for byte (the corpus identity hashes its bytes)
    SHA256SUMS      sha256 of every file but itself and the card (`sha256sum -c SHA256SUMS`)
    provenance/     the recipe the corpus was generated from, when given
    <path>          every clip at its manifest path, byte for byte

metadata.jsonl rather than metadata.csv: `datasets` reads a CSV through pandas, which turns "0"
into an integer and an empty value into NaN; JSON keeps every value the string it is in the
manifest. A release is written into a folder beside DIR and renamed into place at the end, so
there is never a half-written release under DIR's name. Nothing here imports `datasets`.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import glob
import json
import os
import platform
import re
import shutil
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sourcetrace import __version__
from sourcetrace.core.audio import file_problem
from sourcetrace.core.errors import NothingWritten
from sourcetrace.core.fileio import NO_SPACE, copy_file_atomic, sha256_file, write_text_atomic
from sourcetrace.corpus.columns import COLUMNS
from sourcetrace.corpus.journal import PARTS, read_journal
from sourcetrace.corpus.manifest import (
    MANIFEST,
    Corpus,
    ManifestError,
    audio_header_problem,
    corpus_identity,
    outside_problem,
    place_file,
)

CARD = "README.md"
METADATA = "metadata.jsonl"
CHECKSUMS = "SHA256SUMS"
PROVENANCE = "provenance"
RESERVED = (CARD, METADATA, MANIFEST, CHECKSUMS, PROVENANCE)
DEFAULT_LICENSE = "cc-by-4.0"
# Names AudioFolder gives a meaning to: a manifest column so named would not load as a string.
_AUDIOFOLDER_NAMES = re.compile(r"^(audio|file_names?|.*_file_names?)$")
_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
# The Hub's size_categories, by clip count.
_SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M")]


class IncompleteRelease(ManifestError):
    """Clips that cannot go into a release (missing, or not the bytes the manifest hashed):
    a release must be complete, so nothing is written."""


@dataclass
class PackReport:
    out: Path
    clips: int
    bytes: int
    corpus_sha256: str


def is_release(folder: str | Path) -> bool:
    """A folder `pack_corpus` wrote, by its metadata file (`import_release` checks the rest)."""
    return (Path(folder) / METADATA).is_file()


def pack_corpus(corpus_dir: str | Path, out: str | Path, license: str = DEFAULT_LICENSE,
                recipe: str | Path | None = None, link: str = "copy", name: str | None = None,
                log: Callable[[str], None] = print) -> PackReport:
    """Write the corpus as a release in `out` (see the module docstring); refuse an existing non-empty
    `out`, any clip whose bytes differ from the manifest's sha256 or whose header does not hold the
    manifest's audio, and any text that would carry a path or name of this machine."""
    corpus = Corpus.read(corpus_dir, require_files=False)
    out = _release_target(Path(out), log)
    _check_packable(corpus)
    recipe = Path(recipe) if recipe else None
    if recipe is not None and not recipe.is_file():
        raise ManifestError(recipe, ["no such recipe file"])
    manifest_bytes = corpus.manifest_path.read_bytes()
    texts = {MANIFEST: manifest_bytes.decode("utf-8-sig"), METADATA: _metadata_text(corpus)}
    if recipe is not None:
        texts[f"{PROVENANCE}/{recipe.name}"] = recipe.read_text(encoding="utf-8")
    private = _private_strings(corpus.root, out.parent)
    for rel, text in texts.items():
        _refuse_private(text, private, recipe if rel.startswith(PROVENANCE) else corpus.manifest_path)

    with _staged(out, "packing", last=METADATA, log=log) as staging:
        audio_hashes, problems, size = {}, [], 0
        for i, row in enumerate(corpus.rows):
            source, dest = corpus.audio_path(row), staging / row.path
            where = f"{corpus.where(i)} ({row.path})"
            if not source.is_file():
                problems.append(f"{where}: {file_problem(source) or 'missing file'}")
                continue
            place_file(source, dest, link)
            digest = sha256_file(dest)
            if row.sha256 and digest != row.sha256:
                problems.append(f"{where}: sha256 differs from the manifest (file changed or corrupted)")
            else:
                problem = audio_header_problem(dest, row)
                if problem:
                    problems.append(f"{where}: {problem}")
            audio_hashes[row.clip_id] = digest
            size += dest.stat().st_size
        if problems:
            raise IncompleteRelease(corpus.manifest_path, problems + ["nothing was written: a release must be complete"])
        copy_file_atomic(corpus.manifest_path, staging / MANIFEST)
        write_text_atomic(staging / METADATA, texts[METADATA])
        if recipe is not None:
            copy_file_atomic(recipe, staging / PROVENANCE / recipe.name)
        sums = {row.path: audio_hashes[row.clip_id] for row in corpus.rows}
        for rel in sorted(set(texts)):
            sums[rel] = sha256_file(staging / rel)
        write_text_atomic(staging / CHECKSUMS, "".join(f"{h}  {rel}\n" for rel, h in sums.items()))
        identity = corpus_identity(corpus, audio_hashes)["sha256"]  # the identity results files record
        card = dataset_card(corpus, name=name or corpus.root.resolve().name, license=license,
                            corpus_sha256=identity, manifest_sha256=sums[MANIFEST],
                            checksums_sha256=sha256_file(staging / CHECKSUMS), size=size,
                            recipe=(f"{PROVENANCE}/{recipe.name}", sums[f"{PROVENANCE}/{recipe.name}"]) if recipe else None,
                            journals=_journals(corpus.root))
        _refuse_private(card, private, staging / CARD)
        write_text_atomic(staging / CARD, card)
    return PackReport(out=out, clips=len(corpus.rows), bytes=size, corpus_sha256=identity)


def import_release(src: str | Path, out: str | Path, link: str = "copy", log: Callable[[str], None] = print) -> Corpus:
    """The corpus of a release: its manifest byte for byte and every clip at its path, after checking
    SHA256SUMS (paths inside the release only), that metadata.jsonl says what the manifest says, and
    that every clip's header holds the audio the manifest describes. Staged, renamed at the end."""
    src = Path(src)
    missing = [n for n in (CARD, MANIFEST, CHECKSUMS) if not (src / n).is_file()]
    if missing:
        raise ManifestError(src, [f"has {METADATA} but no {', '.join(missing)}: "
                                  "not a complete `sourcetrace corpus pack` release"])
    out = _release_target(Path(out), log)
    corpus = Corpus.read(src)
    problems = _checksum_problems(src, corpus) + _metadata_problems(src, corpus)
    for i, row in enumerate([] if problems else corpus.rows):
        problem = audio_header_problem(corpus.audio_path(row), row)
        if problem:
            problems.append(f"{corpus.where(i)} ({row.path}): {problem}")
    if problems:
        raise ManifestError(src, problems)
    with _staged(out, "importing", last=MANIFEST, log=log) as staging:
        for row in corpus.rows:
            place_file(corpus.audio_path(row), staging / row.path, link)
        copy_file_atomic(corpus.manifest_path, staging / MANIFEST)
    return Corpus.read(out)


# ---- the folder a release or an imported corpus is written into ---------------------------------
# Staged in a hidden folder and renamed into place at the end, so there is never a half-written
# release or corpus under its name. A staging folder is born with OWNER (its writer: boot, process
# and the process's start time), made under a temporary name and renamed, so no live staging folder
# is ever without one: a later run removes staging folders whose writer is gone, never a live one's.
OWNER = ".sourcetrace-owner"
_STAGING = re.compile(r"^\.(?:.+\.)?(?:packing|importing)(?:\.\d+\.new)?$")
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _release_target(out: Path, log: Callable[[str], None]) -> Path:
    """`out` checked before any work: a link is followed to its folder; it must be new or an empty
    folder (stale staging folders of dead writers inside it or beside it are removed; an empty
    `lost+found` of a mount point is allowed), under a writable folder."""
    if out.is_symlink():
        target = out.resolve()
        if not target.is_dir():
            raise ManifestError(out, [f"is a link to {target}, which is not a folder: give a folder (new or empty)"])
        out = target
    for folder in (out, out.parent):
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if _STAGING.match(entry.name) and entry.is_dir():
                _remove_if_stale(entry, log)
    if out.exists() and (not out.is_dir() or _contents(out)):
        raise ManifestError(out, ["already exists and is not empty: choose a new (or empty) --out folder"])
    staged_in = _staging_parent(out)
    existing = next(p for p in [staged_in, *staged_in.parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ManifestError(out, [f"{existing} is not writable: choose an output folder you can write to"])
    return out


def _staging_parent(out: Path) -> Path:
    """Where `out`'s staging folder goes: beside it, or inside it when it is a mount point (so the
    staging is on its file system and the final renames stay there)."""
    return out if out.is_dir() and _is_mount_point(out) else out.parent


def _contents(folder: Path) -> list[Path]:
    """What makes `folder` non-empty; a mount point's empty lost+found (ext4 makes one) does not."""
    return [p for p in folder.iterdir()
            if not (p.name == "lost+found" and p.is_dir() and _is_mount_point(folder) and not any(p.iterdir()))]


def _is_mount_point(folder: Path) -> bool:
    """A mount point, bind mounts of the parent's own file system included (which st_dev cannot tell)."""
    if os.path.ismount(folder):
        return True
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    unescape = functools.partial(re.sub, r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)))  # "\040" is a space
    return str(folder.resolve()) in {unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def _writer() -> str:
    """Who writes a staging folder: boot id, host, process id and the process's start time, so a
    reused process id or another container's process is never taken for the writer."""
    return f"{_boot_id()} {socket.gethostname()} {os.getpid()} {_start_time(os.getpid())}"


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "-"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or "-"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return "-"


def _remove_if_stale(staging: Path, log: Callable[[str], None]) -> None:
    """Remove a staging folder whose writer is gone (or which has no writer: an older sourcetrace's,
    or one killed while being made); name one whose writer runs in the log."""
    try:
        boot, host, pid, started = (staging / OWNER).read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        being_born = re.search(r"\.(\d+)\.new$", staging.name)  # named by its writer's pid until it has OWNER
        if being_born and _process_alive(int(being_born.group(1))):
            return
        shutil.rmtree(staging, ignore_errors=True)
        log(f"[release] removed {staging}: left by an interrupted or older pack or import")
        return
    here = host == socket.gethostname() and boot in (_boot_id(), "-")
    if not here or _start_time(int(pid)) == started != "-" or (started == "-" and _process_alive(int(pid))):
        log(f"[release] {staging}: staging folder of a pack or import still running ({host}, process {pid})"
            + ("" if here else ", or of another machine: remove it if none runs"))
        return
    shutil.rmtree(staging, ignore_errors=True)
    log(f"[release] removed {staging}: left by a pack or import that was killed (process {pid})")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _staged(out: Path, purpose: str, last: str, log: Callable[[str], None]) -> Iterator[Path]:
    """Yield a staging folder on `out`'s own file system; on success put its contents at `out`.

    `out` new, or an empty folder on the parent's file system: the staging folder is renamed over
    it in one step. `out` an empty mount point (another file system, or a bind mount): staged inside
    it and its entries renamed into place, `last` (the file that makes the folder a release or a
    corpus) last. Disk full: one error naming `out`'s file system, and nothing is left behind."""
    inside = _staging_parent(out) == out
    staging = out / f".{purpose}" if inside else out.parent / f".{out.name}.{purpose}"
    out.parent.mkdir(parents=True, exist_ok=True)
    born = staging.with_name(f"{staging.name}.{os.getpid()}.new")
    try:
        shutil.rmtree(born, ignore_errors=True)
        born.mkdir()
        (born / OWNER).write_text(_writer() + "\n", encoding="utf-8")
        os.rename(born, staging)  # fails if another writer's staging folder is there: nothing of its is touched
    except OSError as exc:
        shutil.rmtree(born, ignore_errors=True)
        if staging.exists():
            raise ManifestError(out, [f"{staging} is in use by another pack or import to the same folder: "
                                      "wait for it to finish"]) from None
        if exc.errno in NO_SPACE:
            raise NothingWritten.from_os_error(exc, out, staging) from None
        raise
    try:
        yield staging
        (staging / OWNER).unlink()
        if inside:
            for entry in sorted(staging.iterdir(), key=lambda p: (p.name == last, p.name)):
                os.replace(entry, out / entry.name)
            staging.rmdir()
        else:
            os.replace(staging, out)  # an empty `out` is replaced; a non-empty one was refused before
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in NO_SPACE:
            raise NothingWritten.from_os_error(exc, out, staging) from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def dataset_card(corpus: Corpus, name: str, license: str, corpus_sha256: str, manifest_sha256: str,
                 checksums_sha256: str, size: int, recipe: tuple[str, str] | None,
                 journals: list[tuple[str, int, str]]) -> str:
    """README.md: the Hub's YAML header (every scalar a JSON string, which YAML reads as it is)
    and the provenance the manifest holds."""
    q = json.dumps
    n = len(corpus.rows)
    size_category = next((c for limit, c in _SIZE_CATEGORIES if n < limit), "n>10M")
    tops = sorted({PurePosixPath(r.path).parts[0] for r in corpus.rows})
    data_paths = [METADATA] + [glob.escape(t) + ("/**" if (corpus.root / t).is_dir() else "") for t in tops]
    header = ["---", f"license: {q(license)}", f"pretty_name: {q(name)}", "task_categories:",
              "- \"audio-classification\"", "tags:", "- \"audio-deepfake\"", "- \"model-attribution\"",
              "- \"synthetic-speech\"", "- \"sourcetrace\"", "size_categories:", f"- {q(size_category)}",
              "configs:", "- config_name: \"default\"", "  data_files:", "  - split: \"train\"", "    path:"]
    header += [f"    - {q(p)}" for p in data_paths]
    header += ["dataset_info:", "  features:", "  - name: \"audio\"", "    dtype: \"audio\""]
    for column in corpus.columns:
        header += [f"  - name: {q(column)}", "    dtype: \"string\""]
    header += ["  splits:", "  - name: \"train\"", f"    num_examples: {n}", "    num_bytes: 0",
               f"  download_size: {size}", "---", ""]

    archs = Counter(corpus.column("architecture"))
    ckpts = Counter(corpus.column("checkpoint"))
    lines = [f"# {_cell(name)}", "",
             f"Synthetic speech for audio-deepfake **model attribution**: {n} clips from {len(ckpts)} checkpoints "
             f"of {len(archs)} architectures, labelled with the generator that made each one. Released with "
             f"sourcetrace {__version__} (`sourcetrace corpus pack`).", "",
             "```python", "import datasets", "ds = datasets.load_dataset(\"path/to/this/folder\")  # one split, train",
             "```", "",
             "One split, `train`: the corpus holds no split of its own; benchmark protocols draw support, "
             "validation and query from it by prompt and checkpoint. `sourcetrace corpus import THIS_FOLDER "
             "--out CORPUS` gives back the sourcetrace corpus (`manifest.csv` byte for byte, so the corpus sha256 "
             "of benchmark results is the same).", "",
             "## Columns", "",
             "`audio` and every column of the corpus manifest, each a string as in `manifest.csv` (empty where "
             "the manifest has no value). `datasets` infers types from the JSON: a column whose every value is an "
             "ISO date would load as a timestamp (none of sourcetrace's own columns is one).", "",
             "| column | meaning |", "|---|---|", "| `audio` | the clip, decoded by `datasets` |"]
    lines += [f"| `{_cell(c)}` | {COLUMNS[c]['meaning'] if c in COLUMNS else 'a column of this corpus'} |"
              for c in corpus.columns]

    lines += ["", "## Provenance", "", "Generated from the manifest.", "", "### Generators", "",
              "| architecture | implementation | checkpoints | clips |", "|---|---|---|---|"]
    by_arch: dict[str, set[str]] = defaultdict(set)
    impls: dict[str, set[str]] = defaultdict(set)
    for row in corpus.rows:
        by_arch[row.architecture].add(row.checkpoint)
        impls[row.architecture].add(row.implementation)
    for arch in sorted(archs):
        lines.append(f"| {_cell(arch)} | {_cell(', '.join(sorted(i for i in impls[arch] if i)) or 'not recorded')} "
                     f"| {len(by_arch[arch])} | {archs[arch]} |")
    recorded = [c for c in ("role", "checkpoint_sha256", "speaker") if c in corpus.columns]
    lines += ["", "### Checkpoints", "", "| " + " | ".join(["checkpoint", "architecture", *recorded, "clips"]) + " |",
              "|---" * (3 + len(recorded)) + "|"]
    first = {}
    for row in corpus.rows:
        first.setdefault(row.checkpoint, row)
    for ckpt in sorted(ckpts):
        cells = [ckpt, first[ckpt].architecture, *(first[ckpt].cell(c) for c in recorded)]
        lines.append("| " + " | ".join(map(_cell, cells)) + f" | {ckpts[ckpt]} |")
    vocoders = Counter((r.vocoder, r.vocoder_sha256) for r in corpus.rows if r.vocoder)
    if vocoders:
        lines += ["", "### Vocoders", "", "| vocoder | identity | clips |", "|---|---|---|"]
        lines += [f"| {_cell(v)} | {_cell(h)} | {c} |" for (v, h), c in sorted(vocoders.items())]
    versions = sorted({r.implementation for r in corpus.rows} - {""})
    made_with = sorted({r.sourcetrace for r in corpus.rows} - {""})
    lines += ["", "### Package versions", "",
              f"- generator implementations: {_cell(', '.join(versions)) or 'not recorded in the manifest'}",
              f"- synthesised with sourcetrace: {_cell(', '.join(made_with)) or 'not recorded in the manifest'}",
              f"- packed with sourcetrace {__version__}, Python {platform.python_version()}", ""]
    lines += ["### Recipe", ""]
    if recipe:
        lines.append(f"- `{recipe[0]}`: sha256 `{recipe[1]}` (the recipe the corpus was generated from)")
    else:
        lines.append("- no recipe was given to `corpus pack`")
    if journals:
        lines.append(f"- synthesis journals (`parts/`, not shipped: the manifest holds their rows): {len(journals)}")
        lines += [f"  - `{_cell(rel)}`: {count} clips, sha256 `{h}`" for rel, count, h in journals]
    lines += ["", "### Checksums", "",
              f"- `manifest.csv` sha256: `{manifest_sha256}`",
              f"- corpus sha256 (manifest bytes and every clip's audio hash, as in benchmark results): `{corpus_sha256}`",
              f"- `{CHECKSUMS}` sha256: `{checksums_sha256}`; it lists every file of this release but itself and "
              "this card: check them with `sha256sum -c SHA256SUMS`",
              f"- {n} clips, {size} bytes of audio", ""]
    return "\n".join(header + lines)


def _check_packable(corpus: Corpus) -> None:
    """Paths and column names a release cannot hold as they are; all problems at once."""
    problems = []
    for column in corpus.columns:
        if _AUDIOFOLDER_NAMES.match(column):
            problems.append(f"column {column!r}: `datasets` gives this name a meaning in an audio folder; rename it")
    for i, row in enumerate(corpus.rows):
        path = row.path
        parts = PurePosixPath(path).parts
        if parts and parts[0] in RESERVED:
            problems.append(f"{corpus.where(i)}: path {path!r} is a file of the release itself; move the clip")
        elif PurePosixPath(path).name in _METADATA_FILES:
            problems.append(f"{corpus.where(i)}: path {path!r} would be read as a metadata file by `datasets`")
        elif "\n" in path or "\r" in path or "\\" in path:
            problems.append(f"{corpus.where(i)}: path {path!r} holds a line break or backslash (not in SHA256SUMS)")
    if problems:
        raise ManifestError(corpus.manifest_path, problems)


def _metadata_text(corpus: Corpus) -> str:
    return "".join(json.dumps({"file_name": row.path, **{c: row.cell(c) for c in corpus.columns}},
                              ensure_ascii=False) + "\n" for row in corpus.rows)


def _private_strings(*folders: Path) -> list[str]:
    """What would tell where or by whom a release was made: this machine's folders and host name."""
    found = {str(Path.home()), f"/home/{getpass.getuser()}", socket.gethostname(), str(Path.cwd().resolve())}
    found.update(str(folder.resolve()) for folder in folders)
    return sorted(s for s in found if len(s) > 3 and s != "localhost")


# Absolute paths in the usual places, whatever machine wrote them (a recipe may come from a cluster).
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:~|/(?:home|Users|root|tmp|mnt|media|scratch|srv|var|opt|data|work|shared))/")


def _refuse_private(text: str, private: list[str], source: Path) -> None:
    """A release is public: no absolute path and no host name of this machine in any text of it."""
    patterns = [re.compile(r"(?<![\w.-])" + re.escape(s) + r"(?![\w.-])") for s in private] + [_ABSOLUTE]
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        leak = next((m.group(0) for m in (p.search(line) for p in patterns) if m), None)
        if leak:
            problems.append(f"line {number}: holds {leak!r} (a path or name of a machine): "
                            "a release must not; rewrite it as a relative path or drop it")
    if problems:
        raise ManifestError(source, problems)


def _journals(root: Path) -> list[tuple[str, int, str]]:
    """(relative path, clip count, sha256) of each synthesis journal `synth --recipe` left in the corpus."""
    return [(p.relative_to(root).as_posix(), len(read_journal(p)), sha256_file(p))
            for p in sorted((root / PARTS).glob("*.jsonl"))]


def _checksum_problems(src: Path, corpus: Corpus) -> list[str]:
    problems, listed = [], {}
    for number, line in enumerate((src / CHECKSUMS).read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            problems.append(f"{CHECKSUMS} line {number}: not '<sha256>  <path>'")
            continue
        outside = outside_problem(src, rel)
        if outside:
            problems.append(f"{CHECKSUMS} line {number}: {outside}: a release lists its own files only")
            continue
        listed[rel] = digest
        problem = None if (src / rel).is_file() else "missing file"
        if problem is None and sha256_file(src / rel) != digest:
            problem = "sha256 differs from SHA256SUMS (file changed or corrupted)"
        if problem:
            problems.append(f"{rel}: {problem}")
    unlisted = [r.path for r in corpus.rows if r.path not in listed] + [n for n in (MANIFEST, METADATA) if n not in listed]
    problems += [f"{rel}: not in {CHECKSUMS}" for rel in unlisted]
    return problems


def _metadata_problems(src: Path, corpus: Corpus) -> list[str]:
    """metadata.jsonl must be the manifest's rows, in order, with file_name = path."""
    lines = (src / METADATA).read_text(encoding="utf-8").splitlines()
    if len(lines) != len(corpus.rows):
        return [f"{METADATA}: {len(lines)} rows, {MANIFEST} has {len(corpus.rows)}"]
    for number, (line, row) in enumerate(zip(lines, corpus.rows), start=1):
        try:
            meta = json.loads(line)
        except ValueError:
            return [f"{METADATA} line {number}: not JSON"]
        expected = {"file_name": row.path, **{c: row.cell(c) for c in corpus.columns}}
        if meta != expected:
            differ = sorted(k for k in set(meta) | set(expected) if meta.get(k) != expected.get(k))
            return [f"{METADATA} line {number}: {', '.join(differ)} differ(s) from {MANIFEST} "
                    f"({corpus.where(number - 1)}); the release was edited after packing"]
    return []


def _cell(value: str) -> str:
    """A manifest value in a Markdown table cell: no pipes, line breaks or markup."""
    return re.sub(r"[\r\n]+", " ", value).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
