"""What every use of NVIDIA NeMo in the project shares: quiet logs, and no network."""

from __future__ import annotations

import logging
from types import ModuleType


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def nemo_tts_models() -> ModuleType:
    """`nemo.collections.tts.models`, imported with NeMo's logs at ERROR. NeMo and its telemetry
    shim log at INFO/WARNING when imported and when a model is built, and nemo_text_processing
    resets its logger to INFO on every `normalize` call (a line per sentence in a corpus run), so
    that logger gets a filter rather than a level."""
    for name in ("nemo_logger", "nv_one_logger"):
        logging.getLogger(name).setLevel(logging.ERROR)
    text_processing = logging.getLogger("NeMo-text-processing")
    if _errors_only not in text_processing.filters:
        text_processing.addFilter(_errors_only)
    from nemo.collections.tts import models
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    return models
