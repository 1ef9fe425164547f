"""generators.pitch.pyin equals librosa.pyin bit for bit (FastPitch's training pitch), and its banded
Viterbi equals librosa's dense one on any HMM, including ties and states far behind."""

import numpy as np
import pytest
import soundfile as sf

librosa = pytest.importorskip("librosa")
from librosa import sequence  # noqa: E402

from sourcetrace.core.espeak import sentences, speak  # noqa: E402
from sourcetrace.generators.pitch import _viterbi_banded, pyin  # noqa: E402

FASTPITCH = {"fmin": 65.4, "fmax": 2093.0, "frame_length": 1024, "hop_length": 256, "sr": 22050}


def signals(tmp_path):
    """espeak-ng speech at two pitches, a gliding tone, noise, silence, a clip shorter than a frame."""
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    speech = []
    for i, text in enumerate(sentences(2, seed=5)):
        wave, sr = sf.read(speak(text, tmp_path / f"{i}.wav", pitch=20 + 60 * i), dtype="float32")
        speech.append(librosa.resample(wave, orig_sr=sr, target_sr=22050) if sr != 22050 else wave)
    return {"speech-low": speech[0], "speech-high": speech[1],
            "glide": (0.5 * np.sin(2 * np.pi * (80 + 400 * t) * t)).astype(np.float32),
            "noise": (0.1 * rng.standard_normal(11025)).astype(np.float32),
            "silence": np.zeros(6000, np.float32), "short": (0.3 * np.sin(2 * np.pi * 200 * t[:700])).astype(np.float32),
            "speech-float64": speech[0].astype(np.float64)}


@pytest.mark.parametrize("fill_na", [0.0, np.nan, None])
def test_pyin_equals_librosa_bit_for_bit(tmp_path, fill_na):
    for name, wave in signals(tmp_path).items():
        ours = pyin(wave, fill_na=fill_na, **FASTPITCH)
        theirs = librosa.pyin(wave, fill_na=fill_na, **FASTPITCH)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def _dense_viterbi(log_prob, log_trans, log_p_init):
    return sequence._viterbi.py_func(log_prob, log_trans, log_p_init)[0]  # librosa's own, uncompiled


def _zero_transitions_chosen(log_prob, log_trans, log_p_init, background) -> int:
    """How often the dense recursion's best predecessor is across a zero transition."""
    value, chosen, states = log_prob[0] + log_p_init, 0, np.arange(log_prob.shape[1])
    for t in range(1, len(log_prob)):
        out = value[:, None] + log_trans
        best = out.argmax(axis=0)
        chosen += int((log_trans[best, states] == background).sum())
        value = log_prob[t] + out[best, states]
    return chosen


@pytest.mark.parametrize("seed", range(6))
def test_banded_viterbi_equals_the_dense_one_on_hard_hmms(seed):
    """Banded transitions (with a zero background weighing log(tiny), as librosa's), observation
    log-probabilities spanning thousands of nats (a zero transition then wins: the dense fallback),
    and values rounded to create ties (the first best predecessor must be kept)."""
    rng = np.random.default_rng(seed)
    n, frames, width = 40, 60, 7
    transition = sequence.transition_local(n // 2, width, window="triangle", wrap=False)
    transition = np.kron(sequence.transition_loop(2, 0.9), transition)
    epsilon = np.finfo(np.float64).tiny
    log_trans = np.log(transition + epsilon)
    log_prob = rng.uniform(-5, 0, (frames, n))
    log_prob[rng.random((frames, n)) < 0.3] = np.log(epsilon)  # impossible observations: far-behind states
    for t in np.flatnonzero(rng.random(frames) < 0.2):  # frames one state explains by thousands of nats
        log_prob[t] = -3000.0
        log_prob[t, rng.integers(n)] = 0.0
    if seed % 2:
        log_prob = np.round(log_prob)  # ties everywhere
    log_p_init = np.log(np.full(n, 1 / n))
    background = np.log(epsilon + 0.0)
    to = np.ascontiguousarray(log_trans.T)
    nonzero = to != background
    starts = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int64)
    banded = _viterbi_banded.py_func(log_prob, to, log_p_init, starts, np.nonzero(nonzero)[1].astype(np.int64),
                                     background)
    np.testing.assert_array_equal(banded, _dense_viterbi(log_prob, log_trans, log_p_init))
    assert _zero_transitions_chosen(log_prob, log_trans, log_p_init, background) > 0  # the fallback was needed
    compiled = _viterbi_banded(log_prob, to, log_p_init, starts, np.nonzero(nonzero)[1].astype(np.int64), background)
    np.testing.assert_array_equal(compiled, banded)


def test_pyin_refuses_what_librosa_refuses():
    with pytest.raises(librosa.ParameterError):
        pyin(np.zeros(4000, np.float32), **{**FASTPITCH, "fmax": 20000.0})
    with pytest.raises(librosa.ParameterError):
        pyin(np.array([0.0, np.nan] * 2000, np.float32), **FASTPITCH)
    with pytest.raises(ValueError, match="1-D"):
        pyin(np.zeros((2, 4000), np.float32), **FASTPITCH)
