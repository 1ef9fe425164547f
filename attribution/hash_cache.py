"""sha256 of files, cached under a stat signature that an edit of the content cannot keep.

Size and mtime alone are not enough: `cp -p`, `rsync -t` and `touch -r` restore the mtime of an
edited file, and a same-size edit then looks unchanged. The signature adds the inode (which
`rsync` and editors that write a new file and rename it change) and the ctime, which the kernel
sets on every write or metadata change and no user tool can set back. A hash taken within
`RACY_WINDOW_NS` of the file's last change is not trusted afterwards (the file could change again
within the same timestamp tick, leaving the signature as it was): such a file is hashed once more
on the next run, after which its entry is trusted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sourcetrace.core.fileio import sha256_file, write_json_atomic

RACY_WINDOW_NS = 2_000_000_000


def stat_signature(stat: os.stat_result) -> dict:
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}


class HashCache:
    """A JSON file of key -> {signature, sha256, hashed_ns}; `save` writes it back if anything changed."""

    def __init__(self, cache_file: str | os.PathLike):
        self.cache_file = Path(cache_file)
        try:
            entries = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            entries = {}
        self.entries: dict = entries if isinstance(entries, dict) else {}
        self.changed = False

    def sha256(self, path: str | os.PathLike, key: str) -> str:
        signature = stat_signature(Path(path).stat())
        entry = self.entries.get(key)
        if (isinstance(entry, dict) and entry.get("signature") == signature
                and entry.get("hashed_ns", 0) - signature["ctime_ns"] > RACY_WINDOW_NS):
            return entry["sha256"]
        hashed_ns = time.time_ns()  # taken before reading: a change during hashing is a later ctime
        digest = sha256_file(path)
        self.entries[key] = {"signature": signature, "sha256": digest, "hashed_ns": hashed_ns}
        self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            write_json_atomic(self.cache_file, self.entries)
            self.changed = False
