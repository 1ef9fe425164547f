"""TTS generators behind one interface (`base.Generator`); one file per architecture.

Adding an architecture: write `<name>.py` with a `Generator` subclass and add one line to
`ARCHITECTURES`. The classes import their TTS stacks lazily, so the light core never needs them.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .base import Generator, GeneratorError, load_config, read_checkpoint_meta

ARCHITECTURES = {
    "fastpitch": "sourcetrace.generators.fastpitch:FastPitchGenerator",
    "vits": "sourcetrace.generators.vits:VitsGenerator",
    "gradtts": "sourcetrace.generators.gradtts:GradTTSGenerator",
    "matcha": "sourcetrace.generators.matcha:MatchaGenerator",
}


def generator_class(architecture: str) -> type[Generator]:
    if architecture not in ARCHITECTURES:
        raise GeneratorError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    module, _, name = ARCHITECTURES[architecture].partition(":")
    try:
        return getattr(import_module(module), name)
    except ImportError as exc:
        raise GeneratorError(f"{architecture}: its TTS stack is not installed ({exc}); run tools/setup.sh") from None


def build_generator(architecture: str, config: str, seed: int) -> Generator:
    """A zero-init model: the named config's architecture with weights drawn from `seed`."""
    return generator_class(architecture).from_config_name(config, seed)


def load_generator(checkpoint: str | Path) -> Generator:
    """A generator from one of the project's own checkpoint folders."""
    meta = read_checkpoint_meta(checkpoint)
    generator = generator_class(meta["architecture"])(meta["config"], meta["seed"])
    generator.load_weights(checkpoint)
    return generator


def load_checkpoint(architecture: str, source: str | Path, config: str = "default", trust: bool = False) -> Generator:
    """A project checkpoint folder, or an official file loaded into the named config (Matcha's
    needs `trust`: see each architecture's load_official)."""
    source = Path(source)
    if (source / "generator.json").is_file():
        generator = load_generator(source)
        if generator.architecture != architecture:
            raise GeneratorError(f"{source}: a {generator.architecture} checkpoint, expected {architecture}")
        return generator
    if not source.is_file():
        raise GeneratorError(f"{source}: no checkpoint folder or official checkpoint file there")
    generator = build_generator(architecture, config, seed=0)
    generator.load_official(source, trust=trust)
    return generator


__all__ = ["ARCHITECTURES", "Generator", "GeneratorError", "build_generator", "generator_class",
           "load_checkpoint", "load_config", "load_generator"]
