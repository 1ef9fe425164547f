"""Vocoders: mel spectrogram -> waveform."""
