"""sourcetrace: regenerate synthetic-speech corpora and benchmark audio-deepfake model attribution."""

__version__ = "0.2.0"
