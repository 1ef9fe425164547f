"""No network at run time. Cluster nodes often have none and some sites forbid it, so a stage that
reached out would fail late or leak; every input a run needs is a local file or folder it names.

`go_offline()` sets the offline switches of the libraries that would otherwise look things up on the
Hugging Face hub; a switch the user set already is left as it is. The CLI and every Slurm unit call it
first. A stack that downloads at import time (g2p_en's NLTK data, for ESPnet) is guarded where that
stack is imported (`generators/vits_espnet.py`). `sourcetrace fetch` (pipeline/fetch.py) is the one
exception: it downloads, lifting huggingface_hub's switch only while it fetches a model folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OFFLINE_SWITCHES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def go_offline() -> None:
    for name, value in OFFLINE_SWITCHES.items():
        os.environ.setdefault(name, value)


def default_models_dir() -> Path:
    """Where named SSL models (`xls-r-2b`...) are looked for: $SOURCETRACE_MODELS, else the user's cache."""
    return Path(os.environ.get("SOURCETRACE_MODELS", Path.home() / ".cache" / "sourcetrace" / "models"))


SSL_PREFIX = "ssl:"


@dataclass(frozen=True)
class ExtractorModel:
    """The model an extractor spec reads: `ssl:<folder>@L` names its folder, `<named model>@L` a shipped
    model (`xls-r-2b`...) in the models folder."""

    source: str          # the spec before "@": the model's name, or `ssl:` and the folder
    folder: Path
    named: bool          # a shipped model's name (its folder is models_dir/<name>)

    @property
    def name(self) -> str:
        """The named model, or the folder as the spec writes it (what a cost row is looked up by)."""
        return self.source.removeprefix(SSL_PREFIX)


def extractor_model(spec: str, models_dir: str | os.PathLike | None = None) -> ExtractorModel | None:
    """The model folder an extractor spec reads (`models_dir`, default $SOURCETRACE_MODELS, holds the
    named ones); None for an extractor that reads no model (`lfcc`, `mfcc`: no "@"). Told from the spec's
    spelling alone: the plan, `fetch` and the SSL extractor all read a spec through here."""
    if "@" not in spec:
        return None
    source = spec.rsplit("@", 1)[0]
    if source.startswith(SSL_PREFIX):
        return ExtractorModel(source, Path(source.removeprefix(SSL_PREFIX)), named=False)
    return ExtractorModel(source, (Path(models_dir) if models_dir else default_models_dir()) / source, named=True)
