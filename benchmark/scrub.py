"""Machine paths out of what a leaderboard publishes: where, and as whom, a benchmark ran stays private."""

from __future__ import annotations

import re

# A path as the machine that ran the benchmark spelled it (/home/alice/corpus, ~/x, C:\Users\x):
# a published page shows only its last part. Relative paths (work/mini/corpus) and closing
# tags (</b>, shown escaped) are left alone.
# A space continues the path while the next word still leads to a separator ("/home/alice smith/x").
_MACHINE_PATH = re.compile(r"(?<![\w.<-])(?:~[\w.-]*/|[A-Za-z]:[\\/]|/)[^\s'\"<>/\\]+"
                           r"(?:[^\s'\"<>]| (?=[^\s'\"<>/\\]+[/\\]))*")


def last_part(path: str) -> str:
    """The file or folder name a path ends in, with / or \\ as separator."""
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def public_copy(value):
    """`value` (a results object, or any JSON value) with every absolute path cut to `…/last-part`:
    a leaderboard site must not say where, or as whom, the benchmark ran."""
    if isinstance(value, str):
        return _MACHINE_PATH.sub(lambda m: "…/" + last_part(m.group()), value)
    if isinstance(value, list):
        return [public_copy(v) for v in value]
    if isinstance(value, dict):
        return {public_copy(k): public_copy(v) for k, v in value.items()}
    return value
