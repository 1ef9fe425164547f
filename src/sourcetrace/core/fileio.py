"""File helpers shared by every stage: nothing is ever half-written."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sourcetrace.core.errors import UsageError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


_TMP_SUFFIX = ".tmp"


def torn_writes(target: str | os.PathLike) -> list[Path]:
    """The temporary files of writes to `target` that a kill interrupted (atomic_path's own names,
    `.<name>.<random>.tmp`, beside it): nothing else matches, so removing them is always safe."""
    target = Path(target)
    mine = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(_TMP_SUFFIX)}")  # mkstemp's 8 characters
    return sorted(p for p in target.parent.glob(f".{glob.escape(target.name)}.*{_TMP_SUFFIX}") if mine.fullmatch(p.name))


def _mode_for(target: Path) -> int:
    """The permission bits a rewrite of `target` should keep: its own if it exists, else the umask default."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds.

    The file keeps the mode of the `target` it replaces (a deliberately 0600 file stays 0600);
    a new file gets the mode a plain `open(target, "w")` would give (0666 minus the umask), not
    mkstemp's 0600. A failed write names `target` (OSError.filename), and a writer that hides the
    OS error (libsndfile's "System error.") on a full disk becomes OSError(ENOSPC) for `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _mode_for(target))
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        # A copy names its source first and the temporary file second (shutil.copyfile); a full disk
        # is the destination's problem, so the error names `target` there too.
        if exc.filename in (None, str(tmp_path)) or (exc.errno in NO_SPACE and exc.filename2 == str(tmp_path)):
            exc.filename, exc.filename2 = str(target), None
        raise
    except Exception as exc:
        if _nearly_full(target.parent):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({type(exc).__name__}: {exc})",
                          str(target)) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def read_user_text(path: str | os.PathLike) -> str:
    """A text file a user gave (a recipe, a protocol, a split list): UTF-8, or a UsageError naming the
    file and the first bad byte (a decode error is a ValueError a command would treat as a bug)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, obj) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def copy_file_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def outside_note(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """" (outside FOLDER)" when `path` lies outside `folder`, else "": a recipe may write anywhere,
    but the log says so where it happens."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return "" if path == folder or folder in path.parents else f" (outside the workdir {folder}: the recipe's path)"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    """Stable hash of a JSON-able object (sorted keys), used for fingerprints."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
