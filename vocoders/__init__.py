"""Vocoders (mel -> waveform) behind one interface (`base.Vocoder`); one file per kind.

Adding a kind: write `<name>.py` with a `Vocoder` subclass and add one line to the built-ins of
`sourcetrace.core.plugins.VOCODERS`, or ship it as a plug-in (entry point group `sourcetrace.vocoders`).
"""

from __future__ import annotations

from sourcetrace.checkpoints.registry import official_path
from sourcetrace.core.plugins import VOCODERS
from sourcetrace.vocoders.base import Vocoder, VocoderError


def vocoder_class(kind: str) -> type[Vocoder]:
    """The class of a built-in or plug-in vocoder kind (raises VocoderError naming what is wrong)."""
    return VOCODERS[kind]


def load_vocoder(kind: str, weights: str | None = None, config: str | None = None, seed: int | None = None,
                 name: str | None = None) -> Vocoder:
    """The official `weights` of a vocoder kind, or (no weights) a random one of `config` drawn from `seed`."""
    cls = vocoder_class(kind)
    if weights:
        return cls.from_official(official_path(weights), config=config, name=name)
    if seed is None:
        raise VocoderError(f"vocoder {kind}: give its weights file, or a seed for an untrained one")
    return cls.random(config or "tiny", seed, name=name)


__all__ = ["VOCODERS", "Vocoder", "VocoderError", "load_vocoder", "vocoder_class"]
