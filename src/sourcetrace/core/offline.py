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
from pathlib import Path

OFFLINE_SWITCHES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def go_offline() -> None:
    for name, value in OFFLINE_SWITCHES.items():
        os.environ.setdefault(name, value)


def default_models_dir() -> Path:
    """Where named SSL models (`xls-r-2b`...) are looked for: $SOURCETRACE_MODELS, else the user's cache."""
    return Path(os.environ.get("SOURCETRACE_MODELS", Path.home() / ".cache" / "sourcetrace" / "models"))
