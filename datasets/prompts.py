"""Prompt sets: the texts every checkpoint synthesises.

Format: a UTF-8 TSV file with the header `prompt_id<TAB>text`, one prompt a line. Prompt ids are
unique and become the corpus's `prompt_id`; texts are single-line and non-empty.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import write_text_atomic
from sourcetrace.core.naming import UnsafeName, plain_name

HEADER = ("prompt_id", "text")


class DatasetError(SourcetraceError, ValueError):
    """A malformed dataset or prompt file; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    text: str


def read_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise DatasetError(f"{path}: line 1: expected the header 'prompt_id<TAB>text'")
    prompts, seen, problems = [], {}, []
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2:
            problems.append(f"line {n}: expected 2 tab-separated fields, got {len(fields)}")
            continue
        prompt_id, text = fields[0].strip(), fields[1].strip()
        if not prompt_id or not text:
            problems.append(f"line {n}: empty {'prompt_id' if not prompt_id else 'text'}")
        elif not _is_plain(prompt_id):
            problems.append(f"line {n}: prompt_id {prompt_id!r} cannot name a clip file (no '/', '\\', '.' or '..')")
        elif prompt_id in seen:
            problems.append(f"line {n}: duplicate prompt_id {prompt_id!r} (first on line {seen[prompt_id]})")
        else:
            seen[prompt_id] = n
            prompts.append(Prompt(prompt_id, text))
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems[:20]))
    return prompts


def _is_plain(prompt_id: str) -> bool:
    try:
        plain_name(prompt_id, "prompt_id")
    except UnsafeName:
        return False
    return True


def write_prompts(path: str | Path, prompts: list[Prompt]) -> None:
    buf = io.StringIO()
    buf.write("\t".join(HEADER) + "\n")
    seen = set()
    for p in prompts:
        if "\t" in p.text or "\n" in p.text or not p.text.strip():
            raise DatasetError(f"prompt {p.prompt_id!r}: text must be one non-empty line without tabs")
        if p.prompt_id in seen:
            raise DatasetError(f"duplicate prompt_id {p.prompt_id!r}")
        seen.add(p.prompt_id)
        buf.write(f"{p.prompt_id}\t{p.text}\n")
    write_text_atomic(path, buf.getvalue())


__all__ = ["DatasetError", "Prompt", "read_prompts", "write_prompts"]
