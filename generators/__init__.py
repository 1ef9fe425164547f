"""TTS generators behind one interface (`base.Generator`); one file per architecture.

Adding an architecture: write `<name>.py` with a `Generator` subclass and add one line to the
built-ins of `sourcetrace.core.plugins.GENERATORS` and one to its `BUILTIN_TRAITS` (what recipe checks
read without importing the class; tests/test_plan.py checks the class agrees), or ship it outside the
project as a plug-in (entry point group `sourcetrace.generators`, README "Write a plug-in"). The class declares what it is
(`MelGenerator` or `EndToEndGenerator`, `ZeroShot`, `InferenceOnly`) and its official file
formats (`official_formats`). The classes import their TTS
stacks lazily, so the light core never needs them.
"""

from __future__ import annotations

from pathlib import Path

from sourcetrace.checkpoints.official import describe, inspect_file, model_name
from sourcetrace.checkpoints.registry import official_path
from sourcetrace.core.plugins import GENERATORS
from sourcetrace.generators.base import (
    EndToEndGenerator,
    Generator,
    GeneratorError,
    InferenceOnly,
    MelGenerator,
    ZeroShot,
    load_config,
    read_checkpoint_meta,
)


def generator_class(architecture: str) -> type[Generator]:
    """The class of a built-in or plug-in architecture (raises GeneratorError naming what is wrong)."""
    return GENERATORS[architecture]


def build_generator(architecture: str, config: str, seed: int) -> Generator:
    """A zero-init model: the named config's architecture with weights drawn from `seed`."""
    return generator_class(architecture).from_config_name(config, seed)


def load_generator(checkpoint: str | Path) -> Generator:
    """A generator from one of the project's own checkpoint folders."""
    meta = read_checkpoint_meta(checkpoint)
    generator = generator_class(meta["architecture"])(meta["config"], meta["seed"])
    generator.load_weights(checkpoint)
    return generator


def checkpoint_architecture(source: str | Path, architecture: str | None = None) -> str:
    """The architecture of a checkpoint folder or official file: what the file tells (its keys,
    NeMo's model class), else `architecture`; a contradiction or a file that does not tell
    (without `architecture`) raises, naming the file."""
    source = Path(source)
    if architecture is not None:
        generator_class(architecture)  # a known architecture, its stack installed
    if source.is_dir():
        found = read_checkpoint_meta(source)["architecture"]
    elif source.is_file():
        report = inspect_file(source)
        refusal = report.refusal(architecture or report.holds)
        if refusal:
            raise GeneratorError(f"{source}: {refusal}")
        found = report.holds
        if found is not None and found not in GENERATORS and architecture is None:
            raise GeneratorError(f"{source}: holds {model_name(found)}, not a generator (give it as a vocoder)")
        if found is None and architecture is None:
            raise GeneratorError(f"{source}: {describe(report)} that does not tell its architecture: give "
                                 f"--architecture ({GENERATORS.describe()})")
    else:
        raise GeneratorError(f"{source}: no checkpoint folder or official checkpoint file there")
    if architecture is not None and found is not None and found != architecture:
        raise GeneratorError(f"{source}: holds {model_name(found)}, not {model_name(architecture)}")
    return found or architecture


def load_checkpoint(architecture: str | None, source: str | Path, config: str = "default",
                    trust: bool = False) -> Generator:
    """A project checkpoint folder or an official file (the registry's formats, `architecture`
    None: told by the file), official files loaded into the named config; full unpickling only
    with `trust` (checkpoints/official.py)."""
    source = official_path(source)
    architecture = checkpoint_architecture(source, architecture)
    if source.is_dir():
        return load_generator(source)
    return generator_class(architecture).from_official(source, config, trust=trust)


__all__ = ["EndToEndGenerator", "Generator", "GeneratorError", "InferenceOnly", "MelGenerator",
           "ZeroShot", "build_generator", "checkpoint_architecture", "generator_class", "load_checkpoint", "load_config",
           "load_generator"]
