"""pYIN pitch as `librosa.pyin` computes it, bit for bit, with a faster exact Viterbi decoding.

FastPitch trains on pYIN pitch (NeMo's TTSDataset calls `librosa.pyin`). librosa decodes with a
dense Viterbi: for every frame, every state (2 x 601 pitch bins for FastPitch's 65-2093 Hz) looks at
every state before it, although all but about 100 transitions are zero (a band of +-5 semitones,
within and across voicing). That is 95 % of pyin's time, and most of the main job's FastPitch data
preparation. `pyin` here runs librosa's own front end (its private helpers, the same calls) and
decodes only the nonzero band of each state; because the zero transitions all weigh the same
constant `log(tiny)`, one comparison with the frame's best value proves that none of them can win,
and where it cannot prove it (a tie, or a state far behind) that state is decoded densely, as
librosa does. The result equals librosa's exactly: tests/test_pitch.py compares them on speech, tones,
noise and silence, and `perf/bench_pyin.py` measures the speed-up.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from librosa import sequence, util
from librosa.core import pitch as librosa_pitch
from numba import njit

# librosa's module-private helpers of pyin, the same calls pyin makes (tests/test_pitch.py fails if they change)
_pyin_probabilities = getattr(librosa_pitch, "__pyin_helper")
_check_yin_params = getattr(librosa_pitch, "__check_yin_params")


def pyin(y: np.ndarray, *, fmin: float, fmax: float, sr: float, frame_length: int, hop_length: int,
         fill_na: float | None = np.nan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`librosa.pyin(y, fmin=, fmax=, sr=, frame_length=, hop_length=, fill_na=)` of a 1-D signal,
    its other parameters at librosa's defaults: (f0, voiced_flag, voiced_prob), equal to librosa's."""
    n_thresholds, beta_parameters, boltzmann_parameter = 100, (2, 18), 2
    resolution, max_transition_rate, switch_prob, no_trough_prob = 0.1, 35.92, 0.01, 0.01
    if y.ndim != 1:
        raise ValueError(f"pyin takes a 1-D signal, got shape {y.shape}")
    _check_yin_params(sr=sr, fmax=fmax, fmin=fmin, frame_length=frame_length)
    util.valid_audio(y)
    y = np.pad(y, (frame_length // 2, frame_length // 2), mode="constant")
    y_frames = util.frame(y, frame_length=frame_length, hop_length=hop_length)
    min_period = int(np.floor(sr / fmax))
    max_period = min(int(np.ceil(sr / fmin)), frame_length - 1)
    yin_frames = librosa_pitch._cumulative_mean_normalized_difference(y_frames, min_period, max_period)
    parabolic_shifts = librosa_pitch._parabolic_interpolation(yin_frames)
    thresholds = np.linspace(0, 1, n_thresholds + 1)
    beta_probs = np.diff(scipy.stats.beta.cdf(thresholds, beta_parameters[0], beta_parameters[1]))
    n_bins_per_semitone = int(np.ceil(1.0 / resolution))
    n_pitch_bins = int(np.floor(12 * n_bins_per_semitone * np.log2(fmax / fmin))) + 1
    observation_probs, voiced_prob = _pyin_probabilities(
        yin_frames, parabolic_shifts, sr, thresholds, boltzmann_parameter, beta_probs, no_trough_prob, min_period,
        fmin, n_pitch_bins, n_bins_per_semitone)
    observation_probs, voiced_prob = observation_probs[0], voiced_prob[0]  # (states, frames), (frames,)

    max_semitones_per_frame = round(max_transition_rate * 12 * hop_length / sr)
    transition_width = max_semitones_per_frame * n_bins_per_semitone + 1
    transition = sequence.transition_local(n_pitch_bins, transition_width, window="triangle", wrap=False)
    transition = np.kron(sequence.transition_loop(2, 1 - switch_prob), transition)
    p_init = np.ones(2 * n_pitch_bins) / (2 * n_pitch_bins)

    # librosa.sequence.viterbi's log domain, expression for expression
    epsilon = util.tiny(observation_probs)
    log_trans = np.log(transition + epsilon)
    log_prob = np.log(observation_probs + epsilon)
    log_p_init = np.log(p_init + epsilon)
    background = np.log(epsilon + 0.0 * transition[0, 0])  # what a zero transition weighs, in log_trans's dtype
    log_trans_to = np.ascontiguousarray(log_trans.T)  # [j, k]: from state k to state j
    nonzero = log_trans_to != background
    predecessors = np.nonzero(nonzero)[1].astype(np.int64)  # row-major: ascending k within each j
    starts = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int64)
    states = _viterbi_banded(np.ascontiguousarray(log_prob.T, dtype=np.float64), log_trans_to, log_p_init,
                             starts, predecessors, float(background))

    freqs = fmin * 2 ** (np.arange(n_pitch_bins) / (12 * n_bins_per_semitone))
    f0 = freqs[states % n_pitch_bins]
    voiced_flag = states < n_pitch_bins
    if fill_na is not None:
        f0[~voiced_flag] = fill_na
    return f0, voiced_flag, voiced_prob


@njit(cache=True)
def _viterbi_banded(log_prob, log_trans_to, log_p_init, starts, predecessors, background):  # pragma: no cover - compiled
    """librosa's `_viterbi` (first best predecessor, float64 values, uint16 states), reading for
    each state only its nonzero-transition predecessors unless a zero one might tie or win."""
    n_steps, n_states = log_prob.shape
    value = np.zeros((n_steps, n_states), dtype=np.float64)
    ptr = np.zeros((n_steps, n_states), dtype=np.uint16)
    value[0] = log_prob[0] + log_p_init
    for t in range(1, n_steps):
        previous = value[t - 1]
        best_background = np.max(previous) + background  # the best any zero transition can reach
        for j in range(n_states):
            row = log_trans_to[j]
            best, arg = -np.inf, -1
            for p in range(starts[j], starts[j + 1]):
                k = predecessors[p]
                candidate = previous[k] + row[k]
                if candidate > best:
                    best, arg = candidate, k
            if not best_background < best:  # a zero transition may tie or win: decode this state densely
                best, arg = previous[0] + row[0], 0
                for k in range(1, n_states):
                    candidate = previous[k] + row[k]
                    if candidate > best:
                        best, arg = candidate, k
            ptr[t, j] = arg
            value[t, j] = log_prob[t, j] + best
    state = np.zeros(n_steps, dtype=np.uint16)
    state[-1] = np.argmax(value[-1])
    for t in range(n_steps - 2, -1, -1):
        state[t] = ptr[t + 1, state[t + 1]]
    return state
