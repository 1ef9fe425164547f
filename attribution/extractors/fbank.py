"""w2v-bert's fbank front end (transformers' SeamlessM4TFeatureExtractor) for a padded batch, in torch.

The processor computes Kaldi-style log-mel fbank frames one clip at a time, in numpy, frame by
frame: on a GPU that loop costs more than the first layers of the model. This module computes the
same features for a whole batch at once on the extractor's device, and returns for each clip what
the processor returns for it alone (`padding=True`): per-mel-bin normalised frames, padded by the
processor's own rule to a multiple of its stride, stacked `stride` frames at a time, with its
attention mask (which leaves out a stacked frame that holds a padding frame). The processor's
constants (window, mel filters, stride, padding value) are read from the processor itself; the
framing constants below are those its `_extract_fbank_features` hard-codes.

Float64 throughout, then float32 as the processor returns (the processor also rounds its spectrum
to complex64 on the way; this module does not). Within 1e-4 of the processor: 3e-5 at most seen on
speech and edge-length clips, under 2e-5 on steady tones whose bins vary enough. A clip whose
fbank has a (nearly) flat mel bin, such as digital silence or a steady tone, is left to the
processor itself: normalising by a variance near zero magnifies rounding, and the processor's own
rounding is what the study used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

FRAME_LENGTH, HOP_LENGTH, FFT_LENGTH = 400, 160, 512
PREEMPHASIS, MEL_FLOOR, INT16_SCALE = 0.97, 1.192092955078125e-07, 2 ** 15
NORM_EPSILON = 1e-7
# Mel bins with a variance below this (log-mel units squared) are too flat to normalise
# reproducibly: the processor normalises in float32, so its own rounding is divided by the bin's
# standard deviation. Such clips (digital silence, steady tones) go through the processor. On 300
# tonal clips the difference from the processor reached 2.5e-4 at variances near 1e-4, and stayed
# under 2e-5 above 1e-2; speech bins vary far more.
MIN_BIN_VARIANCE = 1e-2
POWER_SCALE = float(INT16_SCALE) ** 2
# Clips are transformed in pieces of PIECE_FRAMES frames; on the CPU CPU_GROUP_FRAMES frames of
# pieces at a time, whose buffers stay in cache (whole batches at once were slower per clip on
# a CPU; the group size was chosen by measuring a range of them).
# On a GPU the whole batch is one group. Not thread-safe: one caller at a time (buffers are reused).
PIECE_FRAMES, CPU_GROUP_FRAMES = 64, 512
PIECE_SAMPLES = (PIECE_FRAMES - 1) * HOP_LENGTH + FRAME_LENGTH


def supports(processor) -> bool:
    return type(processor).__name__ == "SeamlessM4TFeatureExtractor"


class BatchFbank:
    """Callable: clips (mono float32 at 16 kHz) -> (input_features, attention_mask, lengths)."""

    def __init__(self, processor, device: torch.device):
        self.processor = processor
        self.device = device
        self.group_frames = CPU_GROUP_FRAMES if device.type == "cpu" else None
        self._buffers: dict[str, torch.Tensor] = {}
        self.stride = int(processor.stride)
        self.padding_value = float(processor.padding_value)
        self.window = torch.as_tensor(np.asarray(processor.window), dtype=torch.float64, device=device)
        self.mel_filters = torch.as_tensor(np.asarray(processor.mel_filters), dtype=torch.float64, device=device)

    def _scratch(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A float64 buffer of this shape, zeroed when new. On the CPU it is kept from call to call:
        fresh multi-MB buffers cost page faults on the order of the arithmetic there."""
        size = math.prod(shape)
        if self.group_frames is None:  # a GPU: its caching allocator reuses memory; kept buffers would only grow
            return torch.zeros(shape, dtype=torch.float64, device=self.device)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[name] = torch.zeros(size, dtype=torch.float64, device=self.device)
        return buffer[:size].view(shape)

    def _log_mel(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, mel bins) float64 log-mel of each clip, zeros after its own frames; frame counts.

        Each clip is cut into pieces of PIECE_FRAMES frames (overlapping as frames do); the pieces
        of the whole batch are transformed together, `group_frames` frames at a time."""
        frames = torch.tensor([1 + (len(w) - FRAME_LENGTH) // HOP_LENGTH for w in waves])
        per_clip = -(-int(frames.max()) // PIECE_FRAMES)
        width = (per_clip * PIECE_FRAMES - 1) * HOP_LENGTH + FRAME_LENGTH
        host = np.zeros((len(waves), width), dtype=np.float32)
        for i, wave in enumerate(waves):
            host[i, : min(len(wave), width)] = wave[:width]
        audio = torch.from_numpy(host).to(self.device)
        pieces = audio.unfold(1, PIECE_SAMPLES, PIECE_FRAMES * HOP_LENGTH)  # (batch, pieces, samples), views
        used = torch.arange(per_clip)[None, :] * PIECE_FRAMES < frames[:, None]  # pieces holding a real frame
        clip_of, piece_of = (index.to(self.device) for index in torch.nonzero(used, as_tuple=True))
        log_mel = torch.zeros((len(waves), per_clip, PIECE_FRAMES, self.mel_filters.shape[1]), dtype=torch.float64,
                              device=self.device)
        step = len(clip_of) if self.group_frames is None else max(1, self.group_frames // PIECE_FRAMES)
        for g in range(0, len(clip_of), step):
            group = slice(g, g + step)
            rows = self._scratch("rows", (len(clip_of[group]), PIECE_SAMPLES))
            rows.copy_(pieces[clip_of[group], piece_of[group]])
            log_mel[clip_of[group], piece_of[group]] = self._piece_log_mel(rows)
        log_mel = log_mel.flatten(1, 2)[:, : int(frames.max())]
        valid = torch.arange(log_mel.shape[1], device=self.device)[None, :] < frames.to(self.device)[:, None]
        return log_mel.mul_(valid[..., None]), frames

    def _piece_log_mel(self, rows: torch.Tensor) -> torch.Tensor:
        """(pieces, PIECE_FRAMES, mel bins) log-mel of float64 samples, each row one piece.

        The processor removes each frame's mean, pre-emphasises, windows and transforms it, frame by
        frame. Here the pre-emphasis runs once over each row (frames overlap 2.5-fold), the mean's
        share is subtracted after it (pre-emphasis maps a constant c to 0.03 c at every sample), and
        the int16 scale is applied to the power (a power of two: exact). Equal up to float64 rounding;
        the log-mel is rounded to float32, as the processor returns it."""
        starts = slice(None, PIECE_FRAMES * HOP_LENGTH, HOP_LENGTH)
        emphasised = self._scratch("emphasised", rows.shape)
        torch.sub(rows[:, 1:], rows[:, :-1], alpha=PREEMPHASIS, out=emphasised[:, 1:])
        totals = self._scratch("totals", (len(rows), PIECE_SAMPLES + 1))  # column 0 stays zero
        torch.cumsum(rows, 1, out=totals[:, 1:])  # a frame's sum is a difference of two running totals
        means = (totals[:, FRAME_LENGTH::HOP_LENGTH] - totals[:, starts]) / FRAME_LENGTH
        buffer = self._scratch("frames", (len(rows), PIECE_FRAMES, FFT_LENGTH))  # columns 400.. stay zero
        windowed = buffer[..., :FRAME_LENGTH]
        torch.mul(emphasised.unfold(1, FRAME_LENGTH, HOP_LENGTH), self.window, out=windowed)
        windowed[..., 0] = rows[:, starts] * ((1 - PREEMPHASIS) * self.window[0])  # a frame's first sample
        windowed.addcmul_(means[..., None], self.window, value=-(1 - PREEMPHASIS))
        spectrum = torch.view_as_real(torch.fft.rfft(buffer))
        real, imag = spectrum[..., 0], spectrum[..., 1]
        power = torch.mul(real, real, out=self._scratch("power", real.shape)).addcmul_(imag, imag)
        mel = torch.clamp(power @ self.mel_filters, min=MEL_FLOOR / POWER_SCALE).mul_(POWER_SCALE)
        return mel.log_().float().double()

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
        keep = torch.arange(normalised.shape[1], device=self.device)[None, :, None] < counts
        padded[:, : normalised.shape[1]] = torch.where(keep, normalised, self.padding_value)
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
