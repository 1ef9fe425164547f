"""The corpus contract: a folder with `manifest.csv` and the audio files it lists, its importers,
its synthesis journals and its portable releases.

Every stage after synthesis reads corpora through `Corpus.read`, so every later number rests on the
checks made in `corpus.manifest`. This package is the domain layer's bottom: it imports `core` only.
"""

from sourcetrace.corpus.columns import ClipRecord
from sourcetrace.corpus.importers import import_corpus
from sourcetrace.corpus.manifest import (
    MANIFEST,
    Corpus,
    ManifestError,
    audio_facts,
    corpus_identity,
    label_values,
    verify_corpus,
)

__all__ = ["MANIFEST", "ClipRecord", "Corpus", "ManifestError", "audio_facts", "corpus_identity", "import_corpus", "label_values",
           "verify_corpus"]
