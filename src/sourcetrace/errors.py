"""The one base class of the errors a user can cause.

The CLI prints any `SourcetraceError` as one `error:` line without a traceback, and it can tell
them apart without importing the module that raised them (the generator stack costs seconds and
hundreds of MB of torch). Each error also keeps the builtin class it had before (ValueError,
FileNotFoundError, RuntimeError), so existing `except ValueError` code still catches it.
"""

from __future__ import annotations


class SourcetraceError(Exception):
    """Something a user can fix; the message names the file, flag or recipe key and the fix."""


class StageFailed(SourcetraceError, RuntimeError):
    """A stage of `sourcetrace run` ran but some of its units failed; what finished is kept."""
