"""Checkpoint names and roles, clip ids and paths: built and parsed here and nowhere else.

A checkpoint's name says its role (the corpus contract; protocols select checkpoints by role):

    pretrained           pretrained      the official pretrained model
    step-<N>             scheduled       a from-scratch checkpoint at step N (N zero-padded to 6)
    zero-init-s<seed>    zero-init       an untrained, seeded model
    ft-<speaker>         finetuned       a fine-tune on one speaker (e.g. ft-9136)
    anything else        other

A corpus label is `<architecture>/<name>`. A clip of a checkpoint lives under the checkpoint's
stem, `<label>` or `<label>@<vocoder>` for a clip vocoded by a swapped HiFi-GAN.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sourcetrace.core.errors import SourcetraceError

PRETRAINED = "pretrained"
#: A reference written `speaker:NAME` is a voice the checkpoint stores (XTTS's speakers_xtts.pth), not a clip.
STORED_VOICE = "speaker:"
ROLES = ("pretrained", "scheduled", "zero-init", "finetuned", "other")

_STEP = re.compile(r"(?:^|/)step-(\d+)$")
_FINETUNE = re.compile(r"(?:^|/)ft-([^/]+)$")
_ROLE_PATTERNS = (
    ("pretrained", re.compile(r"(?:^|/)pretrained$")),
    ("scheduled", _STEP),
    ("zero-init", re.compile(r"(?:^|/)zero-init(?:-s\d+)?$")),
    ("finetuned", _FINETUNE),
)


def step_name(step: int) -> str:
    return f"step-{step:06d}"


#: The files of a sourcetrace checkpoint folder (generators/base.py `Generator.save`): its weights, written
#: first, then its identity; each is written atomically, so both being there means the checkpoint is whole.
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_META = "generator.json"


def checkpoint_complete(folder: Path) -> bool:
    """A checkpoint folder holding both its files (a write killed half-way leaves only a temporary file):
    a training run, a zero-init, or `run --plan` counts it as made."""
    return all((folder / name).is_file() for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_META))


def zero_init_name(seed: int) -> str:
    return f"zero-init-s{seed}"


_SPEAKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def is_speaker_id(value) -> bool:
    """A speaker id that can be part of a checkpoint name and a path (HiFi-TTS ids are digits)."""
    return isinstance(value, str) and bool(_SPEAKER_ID.fullmatch(value))


def finetune_name(speaker: str) -> str:
    return f"ft-{speaker}"


def finetune_speaker(checkpoint: str) -> str | None:
    """The speaker of an `ft-<speaker>` name or `<arch>/ft-<speaker>` label; None for other checkpoints."""
    match = _FINETUNE.search(checkpoint)
    return match.group(1) if match else None


def step_of(checkpoint: str) -> int | None:
    """N of a `step-N` name or `<arch>/step-N` label; None for any other checkpoint."""
    match = _STEP.search(checkpoint)
    return int(match.group(1)) if match else None


def checkpoint_role(checkpoint: str) -> str:
    """The role of a checkpoint name or label (one of ROLES)."""
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(checkpoint):
            return role
    return "other"


def checkpoint_label(architecture: str, name: str) -> str:
    return f"{architecture}/{name}"


def clip_stem(checkpoint: str, vocoder: str = "", swapped: bool = False) -> str:
    """Where a checkpoint's clips live: a swapped-vocoder clip lives beside the default one."""
    return f"{checkpoint}@{vocoder}" if swapped else checkpoint


class UnsafeName(SourcetraceError, ValueError):
    """A name that would place a file outside its folder once it becomes part of a path."""


def plain_name(value: str, what: str) -> str:
    """`value`, when it can be one component of a path; else UnsafeName."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\x00"):
        raise UnsafeName(f"{what} {value!r} cannot name a file: no '/', '\\', '.', '..' or empty names")
    return value


def clip_location(checkpoint: str, prompt_id: str, vocoder: str = "", swapped: bool = False) -> tuple[str, str]:
    """(clip_id, relative audio path) of one clip; every part must be a plain file name, so a
    hostile prompt id, label or vocoder name cannot write outside the corpus folder."""
    architecture, slash, name = checkpoint.partition("/")
    if not slash:
        raise UnsafeName(f"checkpoint label {checkpoint!r} must be <architecture>/<name>")
    parts = [(architecture, "architecture"), (name, "checkpoint name"), (prompt_id, "prompt_id")]
    for value, what in parts + ([(vocoder, "vocoder name")] if swapped else []):
        plain_name(value, what)
    stem = clip_stem(checkpoint, vocoder, swapped)
    return f"{stem}/{prompt_id}", f"audio/{stem}/{prompt_id}.wav"


def journal_name(checkpoint: str, vocoder: str = "", swapped: bool = False) -> str:
    """The file name of one synthesis job's journal (one flat folder: '/' becomes '__')."""
    return clip_stem(checkpoint, vocoder, swapped).replace("/", "__") + ".jsonl"


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The noise seed of one prompt's clip (of a batch starting at that prompt): a corpus row's `seed`."""
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16)
