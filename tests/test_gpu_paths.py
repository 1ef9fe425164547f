"""The device-generic speed paths give the same answers as the simple ones.

kNN: the torch search (any device) against a float64 numpy reference, and on a GPU against the CPU;
the CPU's compiled neighbour selection against a full sort and the topk path, ties included.
Feature store: the pipelined loop against the serial one, bit for bit. SSL: the phase breakdown.
"""

import numpy as np
import pytest
import torch

from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.benchmark.protocol import ClipTable, load_suite
from sourcetrace.benchmark.runner import AttributorSpec, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows


def _numpy_neighbours(S, Q, k, metric):
    """Float64 brute force, ordered by (distance, support index): the reference."""
    S, Q = S.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        d = 1.0 - (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (S / np.linalg.norm(S, axis=1, keepdims=True)).T
    else:
        d = np.sqrt(np.maximum(((Q[:, None, :] - S[None, :, :]) ** 2).sum(-1), 0))
    idx = np.array([np.lexsort((np.arange(len(S)), row))[:k] for row in d])
    return idx


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_search_on_cpu_predicts_as_the_numpy_reference(metric):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 16)) * 3
    y = rng.integers(0, 5, 400)
    X = (centres[y] + rng.standard_normal((400, 16))).astype(np.float32)
    S, Q, ys = X[:300], X[300:], y[:300]
    knn = KNNAttributor(k=9, metric=metric, device="cpu", chunk_size=33).fit(S, ys)
    ref = _numpy_neighbours(S, Q, 9, metric)
    votes = np.stack([np.bincount(ys[row], minlength=5) for row in ref])
    np.testing.assert_array_equal(knn.predict(Q), np.argmax(votes, axis=1))
    # Neighbour sets agree wherever float32 and float64 cannot disagree (no near-tie at the boundary).
    assert np.mean([set(a) == set(b) for a, b in zip(knn.kneighbors(Q)[1], ref)]) > 0.97


def _naive_best(near, k):
    """The k largest entries of each row, ties to the lowest column, by a full stable sort."""
    return [set(np.lexsort((np.arange(len(row)), -row))[:k].tolist()) for row in near]


@pytest.mark.parametrize("k,columns", [(1, 7), (5, 23), (9, 9), (56, 300), (7, 12)])
def test_cpu_selection_picks_what_sorting_picks_ties_included(k, columns):
    """The compiled CPU selection and the topk path of other devices pick the same neighbours as a
    full sort, on rows made of few distinct values (ties everywhere, at the k-th place too)."""
    from sourcetrace.attribution.knn import top_k_by_sorting
    from sourcetrace.attribution.knn_select import select_nearest

    rng = np.random.default_rng(k * 1000 + columns)
    near = rng.integers(-3, 4, (41, columns)).astype(np.float32)
    near[0] = 1.0  # one row all equal: the first k columns win
    near[1, ::2] = -0.0  # signed zeros are equal
    near[1, 1::2] = 0.0
    expected = _naive_best(near, k)
    for threads in (1, 3):
        values, index = select_nearest(near, k, threads=threads)
        assert [set(row.tolist()) for row in index] == expected
        np.testing.assert_array_equal(values, np.take_along_axis(near, index, 1))
    values, index = top_k_by_sorting(torch.from_numpy(near), k)
    assert [set(row.tolist()) for row in index.numpy()] == expected
    assert expected[0] == set(range(k))


def test_knn_search_equals_a_naive_reference_on_a_corpus_with_ties(monkeypatch):
    """Integer vectors (exact float32 products) with duplicated support rows: the search returns
    exactly the float64 brute force's neighbours in (distance, index) order and its votes; and the
    whole table1 protocol predicts the same on the CPU selection as on the topk path."""
    import sourcetrace.attribution.knn as knn_module

    rng = np.random.default_rng(5)
    S = rng.integers(-2, 3, (150, 6)).astype(np.float32)
    S[75:] = S[:75]  # every support vector twice: exact ties at every rank
    ys = rng.integers(0, 4, 150)
    Q = rng.integers(-2, 3, (40, 6)).astype(np.float32)
    knn = KNNAttributor(k=11, metric="euclidean", chunk_size=16).fit(S, ys)
    dist, idx = knn.kneighbors(Q)
    d64 = np.sqrt(((Q[:, None, :].astype(np.float64) - S[None, :, :]) ** 2).sum(-1))
    reference = np.array([np.lexsort((np.arange(len(S)), row))[:11] for row in d64])
    np.testing.assert_array_equal(idx, reference)
    np.testing.assert_allclose(dist, np.take_along_axis(d64, reference, 1), rtol=1e-6)
    votes = np.stack([np.bincount(ys[row], minlength=4) for row in reference])
    np.testing.assert_array_equal(knn.predict(Q), np.argmax(votes, axis=1))  # vote ties: first class

    rows = study_rows(n_prompts=12)
    table = ClipTable.from_records(rows)
    X = np.round(clustered_vectors(rows, dim=8) * 2) / 2  # coarse values: many equal distances
    spec = AttributorSpec.parse("knn:k=9")
    compiled = run_protocol(load_suite("table1")[0], table, X, spec, seeds=[0, 1])
    monkeypatch.setattr(knn_module, "select_on_cpu", False)
    sorting = run_protocol(load_suite("table1")[0], table, X, spec, seeds=[0, 1])
    assert compiled["levels"] == sorting["levels"]


def test_knn_without_numba_warns_once_and_picks_the_same_neighbours(monkeypatch):
    """Where numba cannot be imported (a NumPy newer than it supports, a GPU image without it), the
    CPU search says so and falls back to torch.topk: the same neighbours, in the same order."""
    import sys

    import sourcetrace.attribution.knn as knn_module

    rng = np.random.default_rng(7)
    S, Q = rng.standard_normal((120, 8)).astype(np.float32), rng.standard_normal((30, 8)).astype(np.float32)
    ys = rng.integers(0, 3, 120)
    compiled = KNNAttributor(k=7, chunk_size=8).fit(S, ys).kneighbors(Q)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.delitem(sys.modules, "sourcetrace.attribution.knn_select", raising=False)
    monkeypatch.setattr(knn_module, "select_on_cpu", True)
    with pytest.warns(RuntimeWarning, match="compiled neighbour selection is unavailable") as caught:
        fallback = KNNAttributor(k=7, chunk_size=8).fit(S, ys).kneighbors(Q)  # four chunks, one warning
    assert len(caught) == 1 and not knn_module.select_on_cpu
    np.testing.assert_array_equal(fallback[1], compiled[1])
    np.testing.assert_array_equal(fallback[0], compiled[0])


def test_knn_device_is_a_setting_not_an_identity(monkeypatch):
    spec = AttributorSpec.parse("knn:k=5")
    assert spec.build(device="cpu").params() == spec.build().params()
    assert KNNAttributor(device="auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    import sourcetrace.attribution.knn as knn_module

    asked = []  # the device names kNN is built with, each run on the CPU here
    monkeypatch.setattr(knn_module, "resolve_device", lambda name: (asked.append(name), torch.device("cpu"))[1])
    rows = study_rows(n_prompts=12)
    run_protocol(load_suite("table1")[0], ClipTable.from_records(rows), clustered_vectors(rows, dim=8), spec, seeds=[0],
                 device="cuda:3")
    assert asked and set(asked) == {"cuda:3"}  # the runner's device reaches every search


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_knn_on_the_gpu_predicts_as_on_the_cpu():
    rows = study_rows(n_prompts=60)
    table, X = ClipTable.from_records(rows), clustered_vectors(rows, dim=64)
    protocol = load_suite("table1")[0]
    spec = AttributorSpec.parse("knn:k=15")
    cpu = run_protocol(protocol, table, X, spec, seeds=[0], device="cpu")
    gpu = run_protocol(protocol, table, X, spec, seeds=[0], device="cuda")
    assert gpu["levels"]["checkpoint"]["confusion"] == cpu["levels"]["checkpoint"]["confusion"]


@pytest.mark.parametrize("name,decode_threads", [("tiny-wav2vec2", 1), ("tiny-w2v-bert", 1), ("tiny-wav2vec2", 3)])
def test_pipelined_store_is_bit_identical_to_the_serial_loop(tiny_models, speech_tree, tmp_path, monkeypatch, name,
                                                            decode_threads):
    """Background decoding (by one thread or several) and shard writing change nothing: each vector
    equals the serial loop's (decode the batch, extract it), bit for bit, in the same order; shards
    are still written in turn."""
    import sourcetrace.attribution.store as store_mod
    from sourcetrace.attribution.extractors.ssl import SSLExtractor
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.core.audio import load_audio
    from sourcetrace.core.fileio import sha256_file
    from sourcetrace.corpus import import_corpus

    corpus = import_corpus(speech_tree, tmp_path / "corpus")
    extractor = SSLExtractor(tiny_models[name], [2], device="cpu", batch_size=5)
    monkeypatch.setattr(store_mod, "SHARD_MAX_CLIPS", 7)  # several shards, written while extracting
    store = FeatureStore(corpus, extractor, decode_threads=decode_threads)
    report = store.compute(progress=False)
    assert report.computed == len(corpus.rows) and len(list(store.dir.glob("shard-*.npz"))) >= 6
    waves = [load_audio(corpus.audio_path(r), extractor.sample_rate) for r in corpus.rows]
    serial = np.empty((len(waves), extractor.vector_dim), np.float32)
    for batch in extractor.plan_batches([len(w) for w in waves]):
        serial[batch] = extractor.extract([waves[i] for i in batch])
    np.testing.assert_array_equal(store.load(), serial)
    # hashed by the decode threads too: each clip gets its own file's hash
    assert store.audio_hashes() == {r.clip_id: sha256_file(corpus.audio_path(r)) for r in corpus.rows}


def test_phase_timing_breaks_extraction_down_without_changing_it(tiny_models):
    from sourcetrace.attribution.extractors.ssl import SSLExtractor

    waves = [np.random.default_rng(i).standard_normal(4000 + 900 * i).astype(np.float32) * 0.1 for i in range(4)]
    extractor = SSLExtractor(tiny_models["tiny-wav2vec2"], [1], device="cpu")
    plain = extractor.extract(waves)
    extractor.phase_seconds = {}
    timed = extractor.extract(waves)
    np.testing.assert_array_equal(timed, plain)
    assert set(extractor.phase_seconds) == {"preprocess", "copy", "forward", "pool"}
    assert all(v >= 0 for v in extractor.phase_seconds.values()) and extractor.phase_seconds["forward"] > 0


@pytest.mark.tts
def test_setup_warms_the_numba_kernels_runs_reach_into_the_cache(tmp_path):
    """tools/setup.sh runs `python -m sourcetrace.pipeline.numba_cache` once, so parallel processes only read
    numba's cache (its writes are not safe when two processes first compile a kernel at once)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("librosa", reason="the TTS stacks are installed by tools/setup.sh")
    cache = Path(os.environ.get("NUMBA_CACHE_DIR") or tmp_path)  # a test worker's own, else a fresh one
    done = subprocess.run([sys.executable, "-m", "sourcetrace.pipeline.numba_cache"], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, timeout=600)
    assert done.returncode == 0 and "cache warmed: kNN neighbour selection, pyin" in done.stdout, done.stderr
    indexes = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
    # librosa's pyin helper (pitch._pi_wrapper) and FastPitch's banded Viterbi (generators/pitch.py)
    assert {"knn_select._select_rows", "pitch._pi_wrapper", "pitch._viterbi_banded"} <= indexes, indexes
