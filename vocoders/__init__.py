"""Vocoders (mel -> waveform) behind one interface (`base.Vocoder`); one file per kind.

Adding a kind: write `<name>.py` with a `Vocoder` subclass and add one line to `VOCODERS`.
"""

from __future__ import annotations

from importlib import import_module

from .base import Vocoder, VocoderError

VOCODERS = {
    "hifigan": "sourcetrace.vocoders.hifigan:HiFiGAN",             # jik876 (Grad-TTS, Matcha-TTS)
    "nemo-hifigan": "sourcetrace.vocoders.nemo_hifigan:NemoHiFiGAN",  # NVIDIA NeMo (FastPitch)
}


def vocoder_class(kind: str) -> type[Vocoder]:
    if kind not in VOCODERS:
        raise VocoderError(f"unknown vocoder kind {kind!r}; known: {', '.join(sorted(VOCODERS))}")
    module, _, name = VOCODERS[kind].partition(":")
    try:
        return getattr(import_module(module), name)
    except ImportError as exc:
        raise VocoderError(f"vocoder {kind}: its stack is not installed ({exc}); run tools/setup.sh") from None


def load_vocoder(kind: str, weights: str | None = None, config: str | None = None, seed: int | None = None,
                 name: str | None = None) -> Vocoder:
    """The official `weights` of a vocoder kind, or (no weights) a random one of `config` drawn from `seed`."""
    from sourcetrace.checkpoints.registry import official_path

    cls = vocoder_class(kind)
    if weights:
        return cls.from_official(official_path(weights), config=config, name=name)
    if seed is None:
        raise VocoderError(f"vocoder {kind}: give its weights file, or a seed for an untrained one")
    return cls.random(config or "tiny", seed, name=name)


__all__ = ["VOCODERS", "Vocoder", "VocoderError", "load_vocoder", "vocoder_class"]
