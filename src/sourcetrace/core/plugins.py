"""Plug-in registries: the generators, vocoders, feature extractors and attributors sourcetrace knows.

Each kind is one `Registry`: the project's built-in classes plus whatever installed distributions
declare in the kind's entry-point group, e.g. in a plug-in's pyproject.toml

    [project.entry-points."sourcetrace.generators"]
    toyarch = "toyplug.model:ToyGenerator"

Classes are imported only when asked for (a TTS stack is imported only by whoever uses it), and
every loaded class is checked against the kind's base class, so a broken plug-in fails with its
distribution and entry point named. Names are read without importing anything: CLI help texts,
recipe validation and the leaderboard list them cheaply. A built-in name always means the built-in;
a plug-in reusing it is reported, never silently preferred. A question asked of every class (which
one's official format claims a file: checkpoints/official.py) loads them all, through the mapping.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any


def resolve(reference: str):
    """The object a "package.module:attribute" reference names."""
    module, _, attribute = reference.partition(":")
    return getattr(import_module(module), attribute)


@dataclass(frozen=True)
class Plugin:
    """One entry point of a kind's group: where a plug-in class comes from."""

    name: str
    reference: str      # "module:Class"
    distribution: str   # "name version", or "?" when the entry point has no distribution

    def origin(self, group: str) -> str:
        return f"distribution {self.distribution}, entry point {self.name} = {self.reference} (group {group})"


class Registry(Mapping):
    """name -> class of one kind, loaded lazily: built-ins ("module:Class" references) first, then
    the entry points of `group`. `error` is the exception type the kind raises (its module's
    GeneratorError, VocoderError ...); `name_attribute`, when set, is the class attribute that must
    equal the registered name (what checkpoints and results record, then look up again)."""

    def __init__(self, kind: str, group: str, base: str, builtins: dict[str, str], error: str = "sourcetrace.core.errors:UsageError",
                 name_attribute: str | None = None, missing_stack: str = ""):
        self.kind, self.group, self.builtins = kind, group, dict(builtins)
        self._base, self._error, self.name_attribute = base, error, name_attribute
        self._missing_stack = missing_stack  # advice when a built-in's import fails
        self._loaded: dict[str, type] = {}
        self._scanned: tuple[tuple[str, ...], dict[str, list[Plugin]]] | None = None

    # ---- what is installed ----------------------------------------------------------------------
    def plugins(self) -> dict[str, list[Plugin]]:
        """The group's entry points by name (a name may come from several distributions), rescanned
        whenever sys.path changes."""
        key = tuple(sys.path)
        if self._scanned is None or self._scanned[0] != key:
            found: dict[str, list[Plugin]] = {}
            for point in metadata.entry_points(group=self.group):
                dist = point.dist
                label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "?"
                plugin = Plugin(point.name, point.value, label)
                if plugin not in found.get(point.name, []):
                    found.setdefault(point.name, []).append(plugin)
            self._scanned = (key, found)
        return self._scanned[1]

    def names(self) -> list[str]:
        return sorted(set(self.builtins) | set(self.plugins()))

    def is_plugin(self, name: str) -> bool:
        return name not in self.builtins and name in self.plugins()

    def plugin_names(self) -> list[str]:
        return [name for name in self.names() if self.is_plugin(name)]

    def origin(self, name: str) -> str:
        if name in self.builtins:
            return f"built-in {self.builtins[name]}"
        return "; ".join(p.origin(self.group) for p in self.plugins()[name])

    def describe(self) -> str:
        """The names for help texts and errors: "a, b, c"."""
        return ", ".join(self.names())

    # ---- loading --------------------------------------------------------------------------------
    @property
    def base(self) -> type:
        return resolve(self._base)

    @property
    def error(self) -> type[Exception]:
        return resolve(self._error)

    def unknown(self, name: str) -> Exception:
        return self.error(f"unknown {self.kind} {name!r}; known: {self.describe()}")

    def __getitem__(self, name: str) -> type:
        if name not in self:
            raise self.unknown(name)
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def get(self, name, default=None):
        return self[name] if name in self else default  # noqa: SIM401 - this is the mapping's get

    def _load(self, name: str) -> type:
        if name in self.builtins:
            try:
                found = resolve(self.builtins[name])
            except ImportError as exc:
                raise self.error(f"{self.kind} {name}: its stack is not installed ({exc}){self._missing_stack}") from None
            where = f"built-in {self.kind} {name}"
        else:
            candidates = self.plugins()[name]
            if len(candidates) > 1:
                raise self.error(f"{self.kind} {name!r} is declared by several plug-ins: "
                                 + "; ".join(p.origin(self.group) for p in candidates) + ". Uninstall all but one.")
            plugin = candidates[0]
            where = plugin.origin(self.group)
            try:
                found = resolve(plugin.reference)
            except Exception as exc:  # a plug-in's import can fail in any way: name it
                raise self.error(f"{where}: cannot import {plugin.reference}: {type(exc).__name__}: {exc}") from exc
        base = self.base
        if not (isinstance(found, type) and issubclass(found, base)):
            raise self.error(f"{where}: {found!r} is not a subclass of {base.__module__}.{base.__qualname__}")
        if self.name_attribute and getattr(found, self.name_attribute, None) != name:
            raise self.error(f"{where}: {found.__qualname__}.{self.name_attribute} is "
                             f"{getattr(found, self.name_attribute, None)!r}, not the registered name {name!r}")
        return found

    def __contains__(self, name) -> bool:
        return name in self.builtins or name in self.plugins()

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {self.describe()})"


_SETUP = "; run tools/setup.sh"

#: The study's four architectures (its corpus, its 12 conditions); every other generator, built-in or
#: plug-in, goes beyond the study.
STUDY_ARCHITECTURES = ("fastpitch", "gradtts", "matcha", "vits")

@dataclass(frozen=True)
class ArchitectureTraits:
    """What an architecture is, as far as a recipe's checks need it: the recipe is checked the same
    way by `run` and by `run --plan`, which imports no model class (no torch). A class tells its own
    (`Generator.traits`); the built-ins' are written below, and tests/test_plan.py checks each class agrees."""

    end_to_end: bool                    # its own decoder makes the waveform: it takes no vocoder
    zero_shot: bool = False             # it speaks in the voice of a reference given per prompt
    inference_only: str | None = None   # why it cannot be trained here; None: it can
    default_vocoder: str | None = None  # mel architectures: the vocoder kind the study pairs with it


#: why XTTS cannot be trained here (its class gives the same text)
XTTS_INFERENCE_ONLY = ("fine-tuning XTTS's GPT goes through Coqui's GPTTrainer, which needs the release's "
                        "dvae.pth and mel_stats.pth and is not wired into sourcetrace's training loop; "
                        "synthesise from zero-init or official weights instead")

#: The built-in architectures' traits, read without importing them.
BUILTIN_TRAITS = {
    "fastpitch": ArchitectureTraits(end_to_end=False, default_vocoder="nemo-hifigan"),
    "vits": ArchitectureTraits(end_to_end=True),
    "vits-espnet": ArchitectureTraits(end_to_end=True),
    "gradtts": ArchitectureTraits(end_to_end=False, default_vocoder="hifigan"),
    "matcha": ArchitectureTraits(end_to_end=False, default_vocoder="hifigan"),
    "xtts": ArchitectureTraits(end_to_end=True, zero_shot=True, inference_only=XTTS_INFERENCE_ONLY),
}


def architecture_traits(name: str) -> ArchitectureTraits:
    """A known architecture's traits: a built-in's without importing it, a plug-in's from its class."""
    if name in BUILTIN_TRAITS:
        return BUILTIN_TRAITS[name]
    plugin: Any = GENERATORS[name]  # a Generator subclass (the registry checks it)
    return plugin.traits()


GENERATORS = Registry(
    "architecture", "sourcetrace.generators", "sourcetrace.generators.base:Generator",
    {"fastpitch": "sourcetrace.generators.fastpitch:FastPitchGenerator",
     "vits": "sourcetrace.generators.vits:VitsGenerator",
     "vits-espnet": "sourcetrace.generators.vits_espnet:VitsEspnetGenerator",  # ESPnet2's VITS
     "gradtts": "sourcetrace.generators.gradtts:GradTTSGenerator",
     "matcha": "sourcetrace.generators.matcha:MatchaGenerator",
     "xtts": "sourcetrace.generators.xtts:XttsGenerator"},
    error="sourcetrace.generators.base:GeneratorError", name_attribute="architecture", missing_stack=_SETUP)

VOCODERS = Registry(
    "vocoder kind", "sourcetrace.vocoders", "sourcetrace.vocoders.base:Vocoder",
    {"hifigan": "sourcetrace.vocoders.hifigan:HiFiGAN",               # jik876 (Grad-TTS, Matcha-TTS)
     "nemo-hifigan": "sourcetrace.vocoders.nemo_hifigan:NemoHiFiGAN",  # NVIDIA NeMo (tts_hifigan)
     "dle-hifigan": "sourcetrace.vocoders.dle_hifigan:DLEHiFiGAN",     # NVIDIA DeepLearningExamples (FastPitch's in the study)
     "vocos": "sourcetrace.vocoders.vocos:Vocos",                     # charactr's Vocos (24 kHz, re-analysed)
     "bigvgan": "sourcetrace.vocoders.bigvgan:BigVGAN"},               # NVIDIA's BigVGAN v2
    error="sourcetrace.vocoders.base:VocoderError", name_attribute="kind", missing_stack=_SETUP)

#: Built-in extractor kinds; a plug-in extractor class is called with the spec's argument
#: (`name:argument`) or with none (`name`), see attribution/extractors/__init__.py.
EXTRACTORS = Registry(
    "extractor", "sourcetrace.extractors", "sourcetrace.attribution.extractors.base:FeatureExtractor",
    {"lfcc": "sourcetrace.attribution.extractors.spectral:CepstralExtractor",
     "mfcc": "sourcetrace.attribution.extractors.spectral:CepstralExtractor",
     "ssl": "sourcetrace.attribution.extractors.ssl:SSLExtractor"})

ATTRIBUTORS = Registry(
    "attributor", "sourcetrace.attributors", "sourcetrace.attribution.base:Attributor",
    {"knn": "sourcetrace.attribution.knn:KNNAttributor",
     "probe": "sourcetrace.attribution.probe:LinearProbeAttributor"},
    name_attribute="name")
