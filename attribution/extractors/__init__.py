"""Extractor specs -> extractors, through the EXTRACTORS registry (sourcetrace.core.plugins).

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

The name before the first `:` picks the registered kind, whose `from_spec` reads the rest; a spec
with a layer (`@`) is the `ssl` kind's unless a plug-in has that name.
"""

from __future__ import annotations

import os

from sourcetrace.attribution.extractors.base import FeatureExtractor, SpecNotTaken
from sourcetrace.attribution.extractors.ssl import NAMED_MODELS
from sourcetrace.core.errors import UsageError
from sourcetrace.core.plugins import EXTRACTORS


def build_extractor(spec: str, *, models_dir: str | os.PathLike | None = None, device: str = "auto",
                    dtype: str = "float32", batch_size: int | None = None) -> FeatureExtractor:
    name = spec.partition(":")[0]
    if "@" in spec and not EXTRACTORS.is_plugin(name):
        name = "ssl"
    try:
        if name not in EXTRACTORS:
            raise SpecNotTaken(spec)
        return EXTRACTORS[name].from_spec(spec, models_dir=models_dir, device=device, dtype=dtype, batch_size=batch_size)
    except SpecNotTaken:
        plugins = "".join(f", {name}" for name in EXTRACTORS.plugin_names())
        raise UsageError(f"unknown extractor {spec!r}; use lfcc, mfcc, ssl:<folder>@<layer>{plugins} or "
                         f"one of {', '.join(n + '@<layer>' for n in NAMED_MODELS)}") from None

