"""Extractor specs -> extractors.

Spec grammar (what `--extractor` takes):
  lfcc | mfcc                      handcrafted cepstral statistics
  ssl:<model-folder>@<L>           pooled hidden_states[L] of any wav2vec2-family HF model folder
  ssl:<model-folder>@<A>..<B>      every layer A..B from one pass (layer sweeps)
  <named-model>@<L>                a model the project ships the config of (see NAMED_MODELS),
                                   loaded from <models-dir>/<named-model>/
  any SSL spec + :<pooling>        mean (default, the study's) or masked-mean (see ssl.POOLINGS),
                                   e.g. w2v-bert-2.0@4:masked-mean
  <plug-in> | <plug-in>:<argument> an extractor of the entry point group `sourcetrace.extractors`
                                   (sourcetrace.core.plugins.EXTRACTORS), called with the argument if any
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from sourcetrace.attribution.extractors.base import FeatureExtractor
from sourcetrace.attribution.extractors.spectral import CepstralExtractor
from sourcetrace.attribution.extractors.ssl import POOLINGS, ModelFolderError, SSLExtractor
from sourcetrace.core.plugins import EXTRACTORS

NAMED_MODELS = ("xls-r-2b", "w2v-bert-2.0")
BASELINES = {"lfcc": "linear", "mfcc": "mel"}


def default_models_dir() -> Path:
    return Path(os.environ.get("SOURCETRACE_MODELS", Path.home() / ".cache" / "sourcetrace" / "models"))


def shipped_models() -> list[str]:
    """Every model description shipped with the project: the study's models and tiny test models."""
    folder = resources.files(__package__).joinpath("models")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def named_model_spec(name: str) -> dict:
    """The shipped description of a model: its HF name, study layer, config and preprocessor."""
    if name not in shipped_models():
        raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(shipped_models())}")
    text = resources.files(__package__).joinpath("models", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def parse_layers(text: str, spec: str) -> list[int]:
    try:
        if ".." in text:
            first, last = (int(x) for x in text.split("..", 1))
            if first > last:
                raise ValueError
            return list(range(first, last + 1))
        return [int(text)]
    except ValueError:
        raise ValueError(f"extractor spec {spec!r}: layer must be an integer L or a range A..B") from None


def build_extractor(spec: str, *, models_dir: str | os.PathLike | None = None, device: str = "auto",
                    dtype: str = "float32", batch_size: int | None = None) -> FeatureExtractor:
    if spec in BASELINES:
        return CepstralExtractor(BASELINES[spec])
    kind, _, argument = spec.partition(":")
    if EXTRACTORS.is_plugin(kind):
        return EXTRACTORS[kind](argument) if argument else EXTRACTORS[kind]()
    if "@" not in spec:
        plugins = "".join(f", {name}" for name in EXTRACTORS.plugin_names())
        raise ValueError(f"unknown extractor {spec!r}; use lfcc, mfcc, ssl:<folder>@<layer>{plugins} or "
                         f"one of {', '.join(n + '@<layer>' for n in NAMED_MODELS)}")
    source, layer_text = spec.rsplit("@", 1)
    layer_text, _, pooling = layer_text.partition(":")
    pooling = pooling or "mean"
    if pooling not in POOLINGS:
        raise ValueError(f"extractor spec {spec!r}: unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    layers = parse_layers(layer_text, spec)
    if source.startswith("ssl:"):
        return SSLExtractor(source[4:], layers, device=device, dtype=dtype, batch_size=batch_size, pooling=pooling)
    if source not in shipped_models():  # the study's models and the tiny test ones: one grammar for CLI and recipes
        raise ValueError(f"extractor spec {spec!r}: {source!r} is neither ssl:<folder> nor one of {', '.join(shipped_models())}")
    named = named_model_spec(source)
    folder = Path(models_dir) if models_dir else default_models_dir()
    model_dir = folder / source
    if not model_dir.is_dir():
        raise ModelFolderError(
            f"{model_dir}: no such folder. Download the published {named['hf_name'] or source + ' (a test model)'} "
            f"(config.json, preprocessor_config.json, model weights) into it, or point "
            f"--models-dir / SOURCETRACE_MODELS at the folder that holds {source}/."
        )
    config_file = model_dir / "config.json"
    if config_file.is_file():
        found, expected = json.loads(config_file.read_text()), named["config"]
        for key in ("model_type", "hidden_size", "num_hidden_layers"):
            if found.get(key) != expected[key]:
                raise ModelFolderError(f"{config_file}: {key} is {found.get(key)!r}, but {named['hf_name']} "
                                       f"has {expected[key]!r}: wrong model in this folder?")
    return SSLExtractor(model_dir, layers, device=device, dtype=dtype, batch_size=batch_size, label=source,
                        pooling=pooling)


__all__ = ["FeatureExtractor", "build_extractor", "named_model_spec", "NAMED_MODELS", "SSLExtractor",
           "CepstralExtractor", "ModelFolderError", "shipped_models"]
