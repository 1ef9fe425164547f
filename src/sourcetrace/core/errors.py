"""The one base class of the errors a user can cause.

The CLI prints any `SourcetraceError` as one `error:` line without a traceback, and it can tell
them apart without importing the module that raised them (the generator stack costs seconds and
hundreds of MB of torch). Each error also keeps the builtin class it had before (ValueError,
FileNotFoundError, RuntimeError), so existing `except ValueError` code still catches it.
"""

from __future__ import annotations

from pathlib import Path


class SourcetraceError(Exception):
    """Something a user can fix; the message names the file, flag or recipe key and the fix."""


class UsageError(SourcetraceError, ValueError):
    """A command line or call that cannot work: a bad flag combination, a bad value."""


class StageFailed(SourcetraceError, RuntimeError):
    """A stage of `sourcetrace run` ran but some of its units failed; what finished is kept."""


class NothingWritten(SourcetraceError, OSError):
    """An all-or-nothing write (a corpus import, a release) that the disk stopped: nothing is kept."""

    def __init__(self, target: str | Path, what: str):
        folder = Path(target) if Path(target).exists() else Path(target).parent
        super().__init__(f"{target}: no space left on the device (disk full or quota reached) while writing {what}: "
                         f"nothing was written (this output is complete or absent); free space on the file system "
                         f"of {folder} (`df -h {folder}`) and rerun")

    @classmethod
    def from_os_error(cls, exc: OSError, target: str | Path, root: Path) -> NothingWritten:
        """For the disk-full `exc` met while writing under `root` (the output or its staging folder),
        naming the file by its path there."""
        written = Path(exc.filename) if exc.filename else None
        return cls(target, written.relative_to(root).as_posix() if written and root in written.parents else "its files")

