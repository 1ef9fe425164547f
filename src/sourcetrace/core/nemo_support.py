"""What every use of NVIDIA NeMo in the project shares: quiet logs, no network, and its
pronunciation dictionary parsed once per process."""

from __future__ import annotations

import functools
import logging
import os
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
    _parse_cmudict_once()
    return models


def _parse_cmudict_once() -> None:
    """NeMo's `EnglishG2p` parses its CMUdict file (~130,000 lines) at every FastPitch build, a cost
    paid again for each FastPitch checkpoint a corpus recipe loads. Its parse of
    a file is a function of the file alone, so it is kept per (path, size, mtime); each model gets its
    own dict, whose pronunciation lists are shared (EnglishG2p only reads them; NeMo's IpaG2p, which
    edits its table, has its own parser and is not cached). A path NeMo would download for (None)
    is parsed as NeMo does."""
    from nemo.collections.tts.g2p.models.en_us_arpabet import EnglishG2p

    parse = EnglishG2p.__dict__["_parse_as_cmu_dict"].__func__
    if getattr(parse, "sourcetrace_once", False):
        return

    @functools.cache
    def parsed(path: str, size: int, mtime_ns: int, encoding: str) -> dict:
        return parse(path, encoding)

    def parse_once(phoneme_dict_path=None, encoding="latin-1"):
        if phoneme_dict_path is None:
            return parse(phoneme_dict_path, encoding)
        stat = os.stat(phoneme_dict_path)
        return dict(parsed(str(phoneme_dict_path), stat.st_size, stat.st_mtime_ns, encoding))

    parse_once.sourcetrace_once = True
    EnglishG2p._parse_as_cmu_dict = staticmethod(parse_once)
