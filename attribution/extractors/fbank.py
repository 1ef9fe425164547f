"""w2v-bert's fbank front end (transformers' SeamlessM4TFeatureExtractor) for a padded batch, in torch.

The processor computes Kaldi-style log-mel fbank frames one clip at a time, in numpy, frame by
frame: on a GPU that loop costs more than the first layers of the model. This module computes the
same features for a whole batch at once on the extractor's device, and returns for each clip what
the processor returns for it alone (`padding=True`): per-mel-bin normalised frames, padded by the
processor's own rule to a multiple of its stride, stacked `stride` frames at a time, with its
attention mask (which leaves out a stacked frame that holds a padding frame). The processor's
constants (window, mel filters, stride, padding value) are read from the processor itself; the
framing constants below are those its `_extract_fbank_features` hard-codes.

Float64 throughout, then float32 as the processor returns. A clip whose fbank has a (nearly)
constant mel bin, such as digital silence, is left to the processor itself: normalising by a
variance near zero magnifies rounding, and the processor's own rounding is what the study used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

FRAME_LENGTH, HOP_LENGTH, FFT_LENGTH = 400, 160, 512
PREEMPHASIS, MEL_FLOOR, INT16_SCALE = 0.97, 1.192092955078125e-07, 2 ** 15
NORM_EPSILON = 1e-7
# Mel bins with a variance below this (log-mel units squared) are too flat to normalise
# reproducibly across implementations: such clips go through the processor.
MIN_BIN_VARIANCE = 1e-4


def supports(processor) -> bool:
    return type(processor).__name__ == "SeamlessM4TFeatureExtractor"


class BatchFbank:
    """Callable: clips (mono float32 at 16 kHz) -> (input_features, attention_mask, lengths)."""

    def __init__(self, processor, device: torch.device):
        self.processor = processor
        self.device = device
        self.stride = int(processor.stride)
        self.padding_value = float(processor.padding_value)
        self.window = torch.as_tensor(np.asarray(processor.window), dtype=torch.float64, device=device)
        self.mel_filters = torch.as_tensor(np.asarray(processor.mel_filters), dtype=torch.float64, device=device)

    def _log_mel(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, mel bins) float64 log-mel of each clip, zeros after its own frames; frame counts."""
        samples = torch.tensor([len(w) for w in waves])
        frames = 1 + torch.div(samples - FRAME_LENGTH, HOP_LENGTH, rounding_mode="floor")
        audio = torch.zeros(len(waves), int(samples.max()), dtype=torch.float64)
        for i, wave in enumerate(waves):
            audio[i, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32).astype(np.float64))
        audio = audio.to(self.device) * INT16_SCALE
        framed = audio.unfold(1, FRAME_LENGTH, HOP_LENGTH)[:, : int(frames.max())]  # (batch, frames, 400)
        framed = framed - framed.mean(-1, keepdim=True)  # remove DC offset
        framed = torch.cat([framed[..., :1] * (1 - PREEMPHASIS), framed[..., 1:] - PREEMPHASIS * framed[..., :-1]], -1)
        spectrum = torch.fft.rfft(framed * self.window, n=FFT_LENGTH).to(torch.complex64)  # as the processor stores it
        power = spectrum.real.double() ** 2 + spectrum.imag.double() ** 2
        log_mel = torch.log(torch.clamp(power @ self.mel_filters, min=MEL_FLOOR))
        valid = torch.arange(log_mel.shape[1], device=self.device)[None, :] < frames.to(self.device)[:, None]
        return log_mel.float().double() * valid[..., None], frames

    def __call__(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_mel, frames = self._log_mel(waves)
        counts = frames.to(self.device, torch.float64)[:, None, None]
        mean = log_mel.sum(1, keepdim=True) / counts
        valid = torch.arange(log_mel.shape[1], device=self.device)[None, :, None] < counts
        centred = (log_mel - mean) * valid
        variance = (centred ** 2).sum(1, keepdim=True) / (counts - 1)  # ddof=1, as the processor
        normalised = (centred / torch.sqrt(variance + NORM_EPSILON)).float()
        # Pad each clip to a multiple of the stride with the padding value, then stack frames.
        stacked_lengths = torch.div(frames + self.stride - 1, self.stride, rounding_mode="floor")
        longest = int(stacked_lengths.max()) * self.stride
        padded = torch.full((len(waves), longest, normalised.shape[2]), self.padding_value, dtype=torch.float32,
                            device=self.device)
        keep = torch.arange(longest, device=self.device)[None, :] < frames.to(self.device)[:, None]
        padded[:, : normalised.shape[1]][keep[:, : normalised.shape[1]]] = normalised[keep[:, : normalised.shape[1]]]
        features = padded.reshape(len(waves), longest // self.stride, normalised.shape[2] * self.stride)
        # The processor's rule: stacked frame j is kept iff fbank frame j * stride + 1 is real.
        stacked = torch.arange(longest // self.stride)[None, :]
        attention_mask = (stacked * self.stride + 1 < frames[:, None]).long()
        flat = (variance[:, 0] < MIN_BIN_VARIANCE).any(-1).cpu()
        for i in torch.nonzero(flat).flatten().tolist():
            item = self.processor(np.asarray(waves[i], dtype=np.float32), sampling_rate=self.processor.sampling_rate,
                                  return_tensors="pt", padding=True)
            features[i, : item["input_features"].shape[1]] = item["input_features"][0].to(self.device)
        return features, attention_mask, stacked_lengths
